// Which coordinators hold which artifacts, on etcd (server/artifact_copies.h): a coordinator
// that holds one puts <prefix>copies/<sha256>/<its name> (no lease: the file stays on its disk
// while it is down); the holders of an artifact are the members registered now
// (<prefix>members/, leader_election.h) split by whether such a key names them. The keys are
// outside the store's rows (migrate and wipe leave them) and are written by any coordinator,
// leader or standby: they fence nothing and decide only when an upload is acknowledged.
#pragma once

#include <string>

#include "coordinator/etcd/etcd_client.h"
#include "coordinator/server/artifact_copies.h"

namespace gantry::coordinator::ha {

class EtcdArtifactCopies final : public ArtifactCopies {
 public:
  EtcdArtifactCopies(etcd::Client& client, std::string prefix, std::string own_name);
  // In transactions of at most 100 operations (etcd's default --max-txn-ops is 128).
  Status record(const std::vector<std::string>& held, const std::vector<std::string>& lacking) override;
  Expected<Holders> holders(const std::string& sha256) override;

 private:
  std::string key(const std::string& sha256) const;

  etcd::Client& client_;
  const std::string prefix_;
  const std::string own_;
};

}  // namespace gantry::coordinator::ha
