// Pieces of the order engine's worker jobs (agent/core/worker.h) shared by its steps: the
// milestone that reports a traffic step beginning, and the post-allow verification.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "agent/core/verifier.h"
#include "agent/core/worker.h"
#include "agent/probe/probe.h"
#include "agent/traffic/lifecycle.h"
#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::agent {

// Worker milestones named "step:<phase>" are traffic steps beginning (Agent::on_step).
inline constexpr const char* kStepPrefix = "step:";

// Posts a "step:<phase>" milestone on `worker` as each traffic step begins.
traffic::StepObserver step_observer(Worker* worker);

// The probes once more for `ms`, passing throughout (post-allow verification).
std::function<Status(Millis)> verify_for(ProbeList probes, VerifyPolicy p, const Clock& clock, Verifier::Sleep sleep,
                                         const std::atomic<bool>* cancelled);

}  // namespace gantry::agent
