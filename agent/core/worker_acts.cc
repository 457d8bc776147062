// Pieces of the order engine's worker jobs shared by its steps (agent/core/worker_acts.h).
#include "agent/core/worker_acts.h"

namespace gantry::agent {

traffic::StepObserver step_observer(Worker* worker) {
  return [worker](const std::string& ph) { worker->milestone(kStepPrefix + ph, Status::Ok(), 0); };
}

std::function<Status(Millis)> verify_for(ProbeList probes, VerifyPolicy p, const Clock& clock, Verifier::Sleep sleep,
                                         const std::atomic<bool>* cancelled) {
  return [probes, p, &clock, sleep, cancelled](Millis ms) -> Status {
    VerifyPolicy q = p;
    q.min_healthy_ms = ms;
    q.healthy_deadline_ms = ms;
    VerifyResult r = Verifier(clock, sleep).run(probes, q, cancelled);
    if (r.healthy) return Status::Ok();
    return make_error(r.cancelled ? "cancelled" : "unhealthy", r.message);
  };
}

}  // namespace gantry::agent
