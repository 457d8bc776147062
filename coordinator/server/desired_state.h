// How a rollout's end changes its service's desired state (pure: no store, no clock).
//
//   - succeeded (a rollout, or a rollback to an older revision): the desired state is what it
//     installed: its release, selector, plan and converge policy;
//   - rolled back: the desired state is what it was before the rollout (or, if there was none,
//     the release most of its hosts ran before it);
//   - failed or aborted: the fleet is left as it is: the desired state stays what it was, held
//     (drift is reported, not repaired) until the next rollout or rollback of the service ends;
//   - a convergence rollout (kind "converge") repairs drift and changes nothing.
#pragma once

#include <optional>
#include <string>

#include "coordinator/rollout/state_machine.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

// The desired state after rollout `state` (of `kind`) ended in its phase at `wall`; nullopt
// when it stays as it is. `before`: the service's desired state before (nullopt: none).
std::optional<store::DesiredRow> desired_after(const rollout::State& state, const std::string& kind,
                                               const std::optional<store::DesiredRow>& before, Millis wall);

// The plan a convergence rollout uses: the desired state's own (its verification, timeouts,
// failure domains), one host first and then the rest, stopping at the first failure without
// rolling the repaired hosts back (a host that cannot take the release reverts by itself).
nlohmann::json convergence_plan(const nlohmann::json& desired_plan);

}  // namespace gantry::coordinator
