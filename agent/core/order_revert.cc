// Reverting the active order (Agent::begin_revert): back to the previous release, with the
// service's traffic steps when it has them, on the worker; start-first services revert in
// start_first_order.cc. The result is taken in order_job.cc (on_work_done, "revert").
#include "agent/core/agent.h"

#include <memory>
#include <string>

#include "agent/core/worker_acts.h"
#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

void Agent::begin_revert(std::string reason) {
  prepared_.reset();
  send_held();
  auto& a = *state_.active;
  a.failure = reason;
  set_phase(phase::kReverting, reason);
  persist_or_note();  // a failed write must not stop the revert: the host has to keep running
  lg()->warn("order {}: {}; reverting {} to {}", a.order.order_id, reason, a.order.service,
             a.from_version.empty() ? "(nothing)" : a.from_version);
  if (svc().start_first()) return begin_start_first_revert();
  if (a.from_version.empty() || a.from_version == a.order.version) {
    proto::Report r{a.order.order_id,
                    a.order.rollout_id,
                    a.order.service,
                    "failed",
                    disk_version(a.order.service),
                    reason + "; no previous release to revert to",
                    {}};
    finish(std::move(r));
    return;
  }
  progress(phase::kReverting, "reverting to " + a.from_version + ": " + reason);
  auto driver = svc().driver;
  ProbeList probes = svc().probes;
  VerifyPolicy p = policy();
  const Clock& clock = clock_;
  auto sleep = sleep_;
  std::string from = a.from_version;
  if (std::shared_ptr<traffic::Lifecycle> lifecycle = svc().lifecycle) {
    // The same steps as the update, towards the previous release; the drain is skipped when
    // the failed release never got traffic back.
    traffic::StepContext ctx = step_context(/*revert=*/true);
    const bool blocked = traffic_blocked_;
    Worker* worker = &worker_;
    worker_.run("revert",
                [driver, probes, p, &clock, sleep, from, lifecycle, ctx, blocked,
                 worker](const std::atomic<bool>& cancelled) -> Status {
                  traffic::HostActs acts;
                  acts.swap = [&] {
                    if (Status st = driver->activate(from); !st.ok())
                      return Status(make_error("revert", "swap back failed: " + st.error().message));
                    return Status::Ok();
                  };
                  acts.restart = [&] { return driver->restart(from); };
                  acts.verify = [&]() -> Status {
                    VerifyResult r = Verifier(clock, sleep).run(probes, p, &cancelled);
                    if (r.healthy) return Status::Ok();
                    return make_error(r.cancelled ? "cancelled" : "unhealthy", r.message);
                  };
                  acts.verify_for = verify_for(probes, p, clock, sleep, &cancelled);
                  return lifecycle->run(ctx, acts, blocked, step_observer(worker), &cancelled);
                });
    return;
  }
  worker_.run("revert", [driver, probes, p, &clock, sleep, from](const std::atomic<bool>& cancelled) -> Status {
    if (Status st = driver->activate(from); !st.ok())
      return make_error("revert", "swap back failed: " + st.error().message);
    if (Status st = driver->restart(from); !st.ok()) return st;
    Verifier v(clock, sleep);
    VerifyResult r = v.run(probes, p, &cancelled);
    if (r.healthy) return Status::Ok();
    return make_error(r.cancelled ? "cancelled" : "unhealthy", r.message);
  });
}

}  // namespace gantry::agent
