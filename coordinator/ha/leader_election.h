// Leader election among coordinators that share etcd (docs/HIGH_AVAILABILITY.md).
//
// Each coordinator holds one etcd lease of --lease-ttl seconds, kept alive from a thread of
// its own, and registers itself under <prefix>members/<name> on that lease. One attempt at
// leadership is a transaction: if <prefix>leader does not exist, create it on the lease. The
// winner's epoch is the revision that created the key: etcd's revisions only grow, so every
// leader's epoch is higher than any earlier leader's, and the etcd store fences every write on
// that key still having that create revision (a deposed leader's writes fail).
//
// A leader stops (lost() becomes true) when the key is no longer its own, or when its lease
// could have expired: no keepalive answered for lease TTL - kSafetyMs, counted on the
// monotonic clock from when the last answered keepalive was SENT, so the leader always gives up
// before etcd can let a standby in.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/util/expected.h"
#include "coordinator/etcd/etcd_client.h"
#include "coordinator/ha/member_info.h"

namespace gantry::coordinator::ha {

class LeaderElection {
 public:
  static constexpr int64_t kSafetyMs = 1000;
  // A leader's keepalive that failed is tried again after this long (the etcd client has moved
  // on to the next member by then), not after the usual TTL/3.
  static constexpr int64_t kKeepaliveRetryMs = 100;
  struct Options {
    std::string prefix = "/gantry/";
    MemberInfo me;
    int64_t ttl_s = 5;
  };
  LeaderElection(etcd::Client& client, Options opt);
  ~LeaderElection();  // stops the keepalive thread (the lease is left to expire: see resign())
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  // One attempt: grants the lease if this coordinator holds none (or lost it), registers the
  // member, and tries to create the leader key. true: this coordinator is the leader now (epoch()
  // is set; the attempt never succeeds twice). false: another one is (leader() says who, when its
  // record could be read). A coordinator that finds the leader key under its own name, left by an
  // earlier run of itself on another lease, deletes it and tries again at once.
  Expected<bool> campaign();

  bool is_leader() const { return epoch_.load() != 0; }
  uint64_t epoch() const { return epoch_.load(); }
  std::string leader_key() const { return opt_.prefix + "leader"; }
  std::optional<MemberInfo> leader() const;  // as last read; the leader's own record when leading

  // Keeps the lease alive every TTL/3 from a thread of its own; once leader, also checks that
  // the leader key is still its own. Call once, after the first campaign().
  void start_keepalive();
  // The leader lost its leadership (or may have): it must act on nothing more. Reasons are
  // logged once, when it is first seen.
  bool lost() const;
  std::string lost_reason() const;
  // Revokes the lease: the leader key and the member record go at once, so a standby takes over
  // without waiting out the TTL (a clean shutdown).
  void resign();

 private:
  void keepalive_loop();
  void mark_lost(const std::string& why);
  static int64_t mono_ms();

  etcd::Client& client_;
  const Options opt_;
  std::atomic<int64_t> lease_{0};
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int64_t> valid_until_{0};  // monotonic ms: the lease may have expired from then on
  std::atomic<bool> lost_{false};
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;  // leader_, lost_reason_
  std::optional<MemberInfo> leader_;
  std::string lost_reason_;
  std::thread thread_;
};

}  // namespace gantry::coordinator::ha
