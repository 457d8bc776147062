// A client of etcd's v3 API (gRPC, etcd's own .proto files from Debian's golang-etcd-server-dev,
// compiled at build time): the few calls Gantry's etcd store and leader election make. Every
// call is synchronous, has a deadline, and is safe from any thread. Errors are values: a
// failed call is an Error with code "etcd" (unreachable, deadline, refused) and a message
// naming the call; nothing here throws.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/util/expected.h"

namespace gantry::etcd {

// Where etcd is and how to reach it: `etcd://h1:2379,h2:2379,h3:2379` (--store), with TLS
// when ca_file is set (and a client certificate when cert_file/key_file are).
struct ClientConfig {
  std::vector<std::string> endpoints;  // "host:port", tried in order, failing over
  std::string ca_file;                 // PEM; empty: plain text (loopback or a trusted network)
  std::string cert_file;               // PEM client certificate; empty: none
  std::string key_file;                // PEM client key
  int call_timeout_ms = 2000;          // deadline of every call
};

// Parses "etcd://h1:2379,h2:2379" into endpoints (an Error names what is wrong: no host, a
// bad port, a character outside [A-Za-z0-9.:_-[]]).
Expected<ClientConfig> parse_store_uri(const std::string& uri);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

// One comparison of a transaction (etcd's Compare).
struct Compare {
  enum class Target { kVersion, kCreate, kMod, kValue, kLease };
  enum class Result { kEqual, kGreater, kLess, kNotEqual };
  std::string key;
  Target target = Target::kCreate;
  Result result = Result::kEqual;
  int64_t number = 0;  // version, create/mod revision or lease, by target
  std::string value;   // for Target::kValue
};

// One operation of a transaction.
struct Op {
  enum class Kind { kPut, kDelete, kGet };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;      // kPut
  std::string range_end;  // kDelete/kGet: "" = just `key`; prefix_end(key) = every key under it
  int64_t lease = 0;      // kPut: attach to this lease (0: none)
  int64_t limit = 0;      // kGet: 0 = no limit
  static Op put(std::string k, std::string v, int64_t lease = 0);
  static Op del(std::string k, std::string range_end = "");
  static Op get(std::string k, std::string range_end = "", int64_t limit = 0);
};

struct TxnResult {
  bool succeeded = false;  // the compares held: the success ops ran, else the failure ops
  int64_t revision = 0;    // the store's revision after the transaction
  // One entry per op that ran, in order; the keys a kGet op read (empty for put/delete).
  std::vector<std::vector<KeyValue>> gets;
};

struct RangeResult {
  std::vector<KeyValue> kvs;
  bool more = false;  // a limit cut it short
  int64_t revision = 0;
};

// The end of the range of every key that starts with `prefix` (etcd's "prefix" range_end).
std::string prefix_end(const std::string& prefix);

class Client {
 public:
  static Expected<std::unique_ptr<Client>> connect(const ClientConfig& cfg);
  virtual ~Client() = default;

  // Range [key, range_end) ("" = key alone), sorted by key ascending, at most `limit` (0 = all);
  // keys_only leaves values empty. `serializable`: answered by the member without a quorum
  // round trip (may be stale; for read-only views).
  // `descending`: sorted by key descending instead (the newest first of zero-padded ids).
  virtual Expected<RangeResult> range(const std::string& key, const std::string& range_end = "", int64_t limit = 0,
                                      bool keys_only = false, bool serializable = false, bool descending = false) = 0;
  // A transaction is sent again (to the next member) when a try is not answered in time or the
  // member has no leader, within the call's deadline, so it may be applied by a try whose answer
  // was lost and then be evaluated again: its compares must tell (e.g. the etcd store's
  // WriteGuard token; a leader election's put-if-absent reads the key back when it "lost").
  virtual Expected<TxnResult> txn(const std::vector<Compare>& compares, const std::vector<Op>& success,
                                  const std::vector<Op>& failure = {}) = 0;
  // Leases: granted with a TTL in seconds (the ID etcd chose), kept alive by one round trip on
  // the LeaseKeepAlive stream (returns the TTL left; 0 or an Error: the lease is gone), revoked.
  virtual Expected<int64_t> lease_grant(int64_t ttl_s) = 0;
  virtual Expected<int64_t> lease_keepalive(int64_t lease_id) = 0;
  virtual Status lease_revoke(int64_t lease_id) = 0;
  // Compacts history up to `revision` (physical: waits until it is done).
  virtual Status compact(int64_t revision) = 0;
};

}  // namespace gantry::etcd
