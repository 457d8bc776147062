// One write transaction of the etcd store (store internals): puts and deletes gathered by key,
// so that a key written twice in one step is one operation (etcd refuses a transaction that
// names a key twice) holding the last value; committed as one etcd transaction with the
// store's fence compare (docs/HIGH_AVAILABILITY.md, "Transactions and limits").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/util/expected.h"
#include "coordinator/etcd/etcd_client.h"

namespace gantry::store {

// The leadership key whose creation revision a write is conditioned on.
struct Fence {
  std::string key;
  int64_t create_revision = 0;
};

// The store's last write, which every write builds on: `key` (<prefix>meta/write) was last
// written at `revision` with `token`. A write requires mod_revision(key) == revision and puts a
// new token there, so a write applies once even when the client sends it twice (a try that
// seemed lost and was applied after all is recognised by its token), and a stale try applied
// late finds the key moved on and changes nothing.
struct WriteGuard {
  std::string key;
  int64_t revision = 0;  // 0: the key does not exist yet
  std::string token;     // this write's, unique
};

class EtcdBatch {
 public:
  // A put under a range this batch deletes (del_prefix) is dropped: such ranges are rows gone
  // for good (an ended rollout's orders), and etcd refuses a put inside a deleted range.
  void put(const std::string& key, std::string value);
  void del(const std::string& key) { ops_[key] = std::nullopt; }
  // Deletes every key under `prefix`, as one operation; what the batch would put or delete
  // under it is dropped (etcd refuses a transaction whose puts fall in its delete ranges).
  void del_prefix(const std::string& prefix);
  // What this batch will leave at `key`: nullopt = nothing written here; an empty optional
  // inside = deleted.
  std::optional<std::optional<std::string>> pending(const std::string& key) const;
  // A further condition: `key` must not exist (etcd: version == 0).
  void require_absent(const std::string& key) { absent_.push_back(key); }
  bool empty() const { return ops_.empty() && prefixes_.empty(); }
  size_t size() const { return ops_.size() + prefixes_.size(); }
  // Keys pending under a prefix (put or deleted), in key order.
  std::vector<std::string> pending_under(const std::string& prefix) const;

  // Commits as one transaction, with the guard's compare and new token. Errors: code "deposed"
  // when the fence no longer holds (nothing written), "exists" when a require_absent key
  // exists, "conflict" when another write came in between (the guard's key moved on), "etcd"
  // when etcd could not be asked or refused (its limits are named; the outcome is then
  // unknown). On success, the revision the write made (that of the guard's key).
  Expected<int64_t> commit(etcd::Client& client, const std::optional<Fence>& fence, const WriteGuard& guard,
                           const char* what) const;

 private:
  std::map<std::string, std::optional<std::string>> ops_;
  std::vector<std::string> absent_;
  std::vector<std::string> prefixes_;  // del_prefix
};

}  // namespace gantry::store
