// Keeps the fleet on each service's desired state (docs/GUARANTEES.md, 5): finds drift — a
// host the desired state applies to that runs another release (back after its rollout ended,
// new with the service's labels, or changed by hand) — reports it, and, where the policy is
// `converge: auto` and the state is not held, repairs it with a rollout of its own (kind
// "converge", in the history like any other) carrying the same verification and traffic steps.
//
// It decides from the registry (what each host says it runs) and the executor (desired state,
// active rollouts); it starts rollouts through the executor and writes events through the
// store, so a unit test runs it with a real store, a fake order sink and a FakeClock.
#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/clock.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/rollout_executor.h"

namespace gantry::coordinator {

struct Drift {
  std::string host_id;
  std::string service;
  std::string running;  // "" when nothing is installed
  std::string desired;
};

// The hosts `d` applies to that run something else: online, with the service configured and
// idle (not in the middle of an order), matching its selector. Pure; sorted by host id.
std::vector<Drift> find_drift(const store::DesiredRow& d, const fleet::Registry& registry);

class Convergence {
 public:
  Convergence(RolloutExecutor& executor, store::Store& store, const fleet::Registry& registry, const Clock& clock);

  // One look at every service with a desired state: drift found, reported, repaired. Cheap
  // (one pass over the registry per desired service); the coordinator calls it every turn and
  // it looks at most every kEveryMs.
  void tick();
  // Drift as of the last look, by host.
  const std::map<std::string, std::vector<Drift>>& by_host() const { return by_host_; }
  // Hosts drifted per service, for /metrics and `gantry status`.
  std::map<std::string, size_t> counts() const;
  // Adds "drift" (bool), "desired" (the desired release of its first drifted service) and
  // "drift_services" to each host object of `hosts` (a registry to_json array).
  void annotate(nlohmann::json& hosts) const;
  // The desired state per service with its drift, for `gantry status` and /status.
  nlohmann::json desired_json() const;

  static constexpr Millis kEveryMs = 1000;

 private:
  void look();
  // Whether drift found at the last look still holds now (the host still runs what it ran then,
  // is online, and no rollout of the service is changing it): views never show a repaired host.
  bool still(const Drift& x) const;
  // A convergence rollout that ended: its hosts that did not take the release are not tried
  // again until they say Hello again (a restart or reconnect; they would fail the same way).
  void note_ended_repairs();

  RolloutExecutor& executor_;
  store::Store& store_;
  const fleet::Registry& registry_;
  const Clock& clock_;
  Millis last_look_ = 0;
  bool looked_ = false;
  std::map<std::string, std::vector<Drift>> by_host_;
  // (service, host) -> its Hello count (HostRecord::hellos) when its repair failed. Not the
  // connection's identity: without CURVE that is the host id, the same after a reconnect.
  std::map<std::pair<std::string, std::string>, uint64_t> failed_on_;
  // (service, host, running, desired) drift already written to the event log.
  std::set<std::string> reported_;
  std::map<uint64_t, std::string> repairs_;           // convergence rollouts started here -> service
  std::map<std::string, Millis> start_error_logged_;  // by service (monotonic), to rate-limit
};

}  // namespace gantry::coordinator
