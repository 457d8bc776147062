// The traffic steps of a host's lifecycle around every update, revert and rollback order:
//
//   block traffic (drain) -> wait for in-flight work -> swap -> restart -> verify
//     -> allow traffic -> post-allow verification
//
// Each traffic step is a shell command with its own timeout (any may be empty) and, when the
// service names an HAProxy server, a built-in HAProxy step. This file sequences the steps and
// says what each failure means (docs/GUARANTEES.md, "Traffic"); the swap, restart and probes are
// the engine's and come in as HostActs. Everything here runs on the agent's worker thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "agent/traffic/load_balancer.h"
#include "agent/traffic/settings.h"
#include "common/util/clock.h"
#include "common/util/expected.h"
#include "common/util/process.h"

namespace gantry::agent::traffic {

// Progress phases of the traffic steps (Progress.phase; PROTOCOL.md §4.8).
namespace step {
inline constexpr const char* kDraining = "draining";                   // block traffic
inline constexpr const char* kWaitingInflight = "waiting_inflight";    // wait for in-flight work
inline constexpr const char* kAllowingTraffic = "allowing_traffic";    // allow traffic (+ wait for UP)
inline constexpr const char* kVerifyingTraffic = "verifying_traffic";  // post-allow verification
inline constexpr const char* kTrafficAllowed = "traffic_allowed";      // the host is back in rotation
}  // namespace step

// Error codes of the traffic steps (Error::code), which the engine maps to outcomes.
namespace failure {
inline constexpr const char* kDrain = "drain";                 // before the swap: nothing changed
inline constexpr const char* kAllowTraffic = "allow_traffic";  // verified, not back in rotation: a failed host
inline constexpr const char* kPostAllow = "post_allow";        // after allowing: reverted
}  // namespace failure

// What a step's command sees in its environment (GANTRY_*; README "Rolling without downtime").
struct StepContext {
  std::string service;
  std::string root;  // the service's install root
  std::string order_id;
  uint64_t rollout_id = 0;
  std::string kind;          // "update", "rollback" (orders) or "revert" (the agent's own)
  std::string from_version;  // what ran before this sequence (empty: nothing)
  std::string to_version;    // what runs after it
  // Start-first (agent/core/start_first.h): the slot whose instance the step acts on, and its
  // port (GANTRY_SLOT, GANTRY_SLOT_PORT); empty for a stop-first service.
  std::string slot;
  int slot_port = 0;
};

// The engine's own acts inside a sequence; each returns when done.
struct HostActs {
  std::function<Status()> swap;     // points `current` at ctx.to_version, durably
  std::function<Status()> restart;  // restarts the service on it
  std::function<Status()> verify;   // probes until healthy for min_healthy (or the deadline)
  // The probes again for `ms` (post-allow verification); ok iff they pass throughout.
  std::function<Status(Millis ms)> verify_for;
};

// Called as each step begins (phase: a step:: name, or "swapping", "restarting", "verifying").
using StepObserver = std::function<void(const std::string& phase)>;

class Lifecycle {
 public:
  using Sleep = std::function<void(Millis)>;

  // `lb` may be null (no built-in load balancer step).
  Lifecycle(LifecycleSettings settings, ProcessRunner& runner, std::shared_ptr<LoadBalancer> lb, const Clock& clock,
            Sleep sleep);

  const LifecycleSettings& settings() const { return s_; }
  bool any() const { return s_.any() || lb_ != nullptr; }

  // Block traffic, then wait for in-flight work. On failure traffic is allowed back (best
  // effort) and the error (code failure::kDrain) says whether that worked: nothing changed.
  // allow_back = false: a failure leaves it blocked (start-first's new slot, never to get
  // traffic before it is verified).
  Status block(const StepContext& ctx, const StepObserver& on_step, const std::atomic<bool>* cancelled = nullptr,
               bool allow_back = true);

  // After a healthy verification: allow traffic, wait until the balancer reports the server UP,
  // then the post-allow verification. Errors: failure::kAllowTraffic (the host stays out of
  // rotation), failure::kPostAllow (it took traffic and then failed: revert it).
  Status allow(const StepContext& ctx, const HostActs& acts, const StepObserver& on_step,
               const std::atomic<bool>* cancelled = nullptr);
  // The two halves of allow(): traffic allowed (and UP), then the post-allow verification.
  Status allow_traffic(const StepContext& ctx, const StepObserver& on_step, const std::atomic<bool>* cancelled);
  Status verify_allowed(const StepContext& ctx, const HostActs& acts, const StepObserver& on_step,
                        const std::atomic<bool>* cancelled);

  // The whole sequence for one release change with traffic already blocked or not:
  // [block] -> swap -> restart -> verify -> allow -> post-allow. The revert of a failed order
  // uses it; a failed block does not stop a revert (the host must end on its old release), it is
  // named in the error or logged.
  Status run(const StepContext& ctx, const HostActs& acts, bool traffic_blocked, const StepObserver& on_step,
             const std::atomic<bool>* cancelled = nullptr);

  // Undoes a block: the allow-traffic command and HAProxy `ready`, without waiting for UP (the
  // release that ran before never stopped). For an order that fails after its drain, before its swap.
  Status unblock(const StepContext& ctx);

  // The environment a step command gets.
  std::map<std::string, std::string> env(const StepContext& ctx, const std::string& phase) const;

 private:
  Status run_command(const StepCommand& c, const StepContext& ctx, const std::string& phase);
  Status wait_sessions_drained(const std::atomic<bool>* cancelled);
  Status wait_up(const std::atomic<bool>* cancelled);

  LifecycleSettings s_;
  ProcessRunner& runner_;
  std::shared_ptr<LoadBalancer> lb_;
  const Clock& clock_;
  Sleep sleep_;
};

// The built-in balancer a service's settings name (HAProxy), or null when none; an invalid
// socket or name is an error (the agent refuses its config).
Expected<std::shared_ptr<LoadBalancer>> make_load_balancer(const HaproxySettings& h);

}  // namespace gantry::agent::traffic
