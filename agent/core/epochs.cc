// Coordinator epochs (Agent::observe_epoch): the highest seen is journaled before anything
// stamped with it is acted on, so a restarted agent still refuses a deposed coordinator.
#include "agent/core/agent.h"
#include "agent/core/epoch_gate.h"

#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

bool Agent::observe_epoch(uint64_t epoch, const std::string& what) {
  const EpochVerdict v = check_epoch(state_.highest_epoch, epoch);
  if (!v.accept) {
    lg()->warn("{} refused, sent by a deposed coordinator: {}", what, stale_epoch_message(epoch, state_.highest_epoch));
    return false;
  }
  if (v.raise) {
    const uint64_t before = state_.highest_epoch;
    state_.highest_epoch = epoch;
    // A failed write leaves the raise in memory only: this process still refuses lower epochs,
    // and the next successful write of the journal carries it.
    if (Status st = persist(); !st.ok())
      lg()->error("coordinator epoch {} (from {}) not journaled: {}", epoch, what, st.error().message);
    else
      lg()->info("coordinator epoch {} (was {}), from {}", epoch, before, what);
  }
  return true;
}

}  // namespace gantry::agent
