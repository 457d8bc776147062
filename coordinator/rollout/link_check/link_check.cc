// Links the rollout core with nothing but the C++ runtime: a build of this program fails if the
// core comes to need sockets, SQLite or another library (see coordinator/CMakeLists.txt). It
// runs one rollout to its end so that every part of the core is linked in.
#include "coordinator/rollout/planner.h"
#include "coordinator/rollout/state_machine.h"

int main() {
  using namespace gantry::rollout;
  std::vector<HostCandidate> hosts{{"h1", {}, "v1", true}, {"h2", {}, "v1", true}};
  auto plan = Plan::from_json(nlohmann::json::object());
  if (!plan) return 1;
  StepResult r = step(State{}, EvStart{1, "svc", "v2", *plan, hosts}, 1000);
  for (int i = 0; i < 4 && !is_terminal(r.state.phase); ++i) {
    for (const auto& h : r.state.hosts)
      if (h.state == HostState::kOrdered)
        r = step(r.state, EvReport{h.host_id, h.order_id, Outcome::kSucceeded, "v2", ""}, 2000);
  }
  auto restored = State::from_json(r.state.to_json());
  return restored && r.state.phase == Phase::kSucceeded && count(*restored).healthy == 2 ? 0 : 1;
}
