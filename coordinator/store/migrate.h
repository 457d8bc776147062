// `gantry-coordinator migrate --from sqlite:PATH --to etcd://...`: copies an installation's
// SQLite store into an etcd store (docs/HIGH_AVAILABILITY.md, "Migrating"). Run with every
// coordinator stopped. Refuses a target prefix that holds rows unless forced (then they are
// deleted first), and counts every kind of row in both stores afterwards.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/util/expected.h"
#include "coordinator/etcd/etcd_client.h"

namespace gantry::store {

class SqliteStore;
class EtcdStore;

// Rows of each kind, as counted in the target after the copy ("hosts", "releases", ...).
using MigrationCounts = std::map<std::string, uint64_t>;

// Copies every row of `from` (the SQLite database at `sqlite_path`) into `to`. `to` must be
// empty unless `force` (then wiped first). Afterwards etcd's revision is above the SQLite
// store's last epoch, so that the first etcd leader's epoch (its leadership key's creation
// revision) is higher than any epoch agents have already seen.
Expected<MigrationCounts> migrate(SqliteStore& from, const std::string& sqlite_path, EtcdStore& to,
                                  etcd::Client& client, bool force);

// The subcommand: parses `args` (the words after "migrate"), prints what it did; returns the
// process exit code (0 done, 1 failed, 2 bad usage).
int migrate_main(const std::vector<std::string>& args);

}  // namespace gantry::store
