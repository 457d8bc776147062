#include "coordinator/ha/leader_election.h"

#include <algorithm>
#include <chrono>

#include "common/util/log.h"
#include "common/util/text.h"

namespace gantry::coordinator::ha {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("election");
  return l.get();
}
}  // namespace

LeaderElection::LeaderElection(etcd::Client& client, Options opt) : client_(client), opt_(std::move(opt)) {}

LeaderElection::~LeaderElection() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

int64_t LeaderElection::mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Expected<bool> LeaderElection::campaign() {
  if (is_leader()) return true;
  if (lease_.load() == 0 || mono_ms() >= valid_until_.load()) {
    const int64_t sent = mono_ms();
    auto id = client_.lease_grant(opt_.ttl_s);
    if (!id) return id.error();
    lease_ = *id;
    valid_until_ = sent + opt_.ttl_s * 1000 - kSafetyMs;
    L()->info("{}: lease {:x} granted ({} s)", opt_.me.name, *id, opt_.ttl_s);
  }
  const int64_t lease = lease_.load();
  const std::string key = leader_key();
  const std::string me = opt_.me.to_json();
  using etcd::Compare;
  using etcd::Op;
  auto t = client_.txn({Compare{key, Compare::Target::kCreate, Compare::Result::kEqual, 0, ""}},
                       {Op::put(key, me, lease), Op::put(opt_.prefix + "members/" + opt_.me.name, me, lease)},
                       {Op::get(key), Op::put(opt_.prefix + "members/" + opt_.me.name, me, lease)});
  if (!t) return t.error();
  if (t->succeeded) {
    epoch_ = static_cast<uint64_t>(t->revision);
    std::lock_guard<std::mutex> g(mu_);
    leader_ = opt_.me;
    L()->info("{}: elected leader, epoch {}", opt_.me.name, t->revision);
    return true;
  }
  if (t->gets.empty() || t->gets[0].empty()) return false;  // gone meanwhile: the next attempt
  const etcd::KeyValue& held = t->gets[0][0];
  auto info = MemberInfo::from_json(held.value);
  if (!info) {
    L()->warn("the leader key holds a record that is not valid: {}", safe_text(info.error().message, 200));
    std::lock_guard<std::mutex> g(mu_);
    leader_.reset();
    return false;
  }
  if (info->name == opt_.me.name && held.lease == lease) {
    // Created by an earlier try of this very transaction whose answer was lost (the client sends
    // a call again within its deadline): this coordinator won, at that key's creation.
    epoch_ = static_cast<uint64_t>(held.create_revision);
    std::lock_guard<std::mutex> g(mu_);
    leader_ = opt_.me;
    L()->info("{}: elected leader, epoch {} (an earlier try of the campaign)", opt_.me.name, held.create_revision);
    return true;
  }
  if (info->name == opt_.me.name && held.lease != lease) {
    // Left by an earlier run of this coordinator (names are unique): it is not coming back.
    L()->warn("{}: the leader key is from an earlier run of this coordinator (lease {:x}); deleting it", opt_.me.name,
              held.lease);
    auto d = client_.txn({Compare{key, Compare::Target::kCreate, Compare::Result::kEqual, held.create_revision, ""}},
                         {Op::del(key)});
    if (!d) return d.error();
    return campaign();
  }
  std::lock_guard<std::mutex> g(mu_);
  if (!leader_ || leader_->to_json() != info->to_json())
    L()->info("{}: standing by; the leader is {} at {}", opt_.me.name, info->name, info->operator_ep);
  leader_ = *info;
  return false;
}

std::optional<MemberInfo> LeaderElection::leader() const {
  std::lock_guard<std::mutex> g(mu_);
  return leader_;
}

void LeaderElection::start_keepalive() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { keepalive_loop(); });
}

void LeaderElection::keepalive_loop() {
  const int64_t every = std::max<int64_t>(opt_.ttl_s * 1000 / 3, 200);
  int64_t next = mono_ms();
  while (!stop_) {
    const int64_t now = mono_ms();
    if (is_leader() && now >= valid_until_.load())
      mark_lost("no keepalive of its etcd lease was answered in time; the lease may have expired");
    if (now < next) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(next - now, 50)));
      continue;
    }
    next = now + every;
    const int64_t lease = lease_.load();
    if (lease == 0 || lost_) continue;
    const int64_t sent = mono_ms();
    auto ttl = client_.lease_keepalive(lease);
    if (ttl && *ttl > 0) {
      valid_until_ = sent + *ttl * 1000 - kSafetyMs;
    } else {
      const std::string why = ttl ? "the lease is gone" : ttl.error().message;
      L()->warn("{}: keepalive of lease {:x} failed: {}", opt_.me.name, lease, safe_text(why, 300));
      if (ttl && !is_leader()) lease_ = 0;  // a standby takes a new lease at its next attempt
      if (ttl && is_leader()) mark_lost("its etcd lease expired");
      // A leader retries soon, not a whole interval later: the client goes on to another
      // member, and with a short TTL a full interval can outlast what is left of the lease's
      // validity (TTL 3 s: valid 2 s after the last answered send, one interval 1 s).
      if (is_leader()) next = std::min(next, mono_ms() + kKeepaliveRetryMs);
      continue;
    }
    if (is_leader()) {
      auto r = client_.range(leader_key());
      if (r && (r->kvs.empty() || static_cast<uint64_t>(r->kvs[0].create_revision) != epoch()))
        mark_lost("the leader key is no longer its own (deposed)");
    }
  }
}

bool LeaderElection::lost() const { return lost_.load() || (is_leader() && mono_ms() >= valid_until_.load()); }

std::string LeaderElection::lost_reason() const {
  std::lock_guard<std::mutex> g(mu_);
  return lost_reason_.empty() ? "its etcd lease may have expired" : lost_reason_;
}

void LeaderElection::mark_lost(const std::string& why) {
  if (lost_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> g(mu_);
    lost_reason_ = why;
  }
  L()->critical("{}: lost the leadership (epoch {}): {}", opt_.me.name, epoch(), why);
}

void LeaderElection::resign() {
  const int64_t lease = lease_.exchange(0);
  if (lease == 0) return;
  if (auto s = client_.lease_revoke(lease); !s.ok())
    L()->warn("{}: cannot revoke lease {:x}: {}", opt_.me.name, lease, safe_text(s.error().message, 300));
  else
    L()->info("{}: resigned (lease {:x} revoked)", opt_.me.name, lease);
}

}  // namespace gantry::coordinator::ha
