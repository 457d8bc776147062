// The active order of a start-first service (the sequence itself: agent/core/start_first.h):
// the new release started in the idle slot and promoted, its result, and its revert.
#include "agent/core/agent.h"

#include <memory>
#include <string>

#include "agent/core/fault.h"
#include "agent/core/start_first.h"
#include "agent/core/worker_acts.h"
#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

// The engine's acts for the start-first sequence, for a job whose cancel flag is `cancelled`.
start_first::Acts start_first_acts(const ServiceRuntime& rt, const VerifyPolicy& p, const Clock& clock,
                                   const Verifier::Sleep& sleep, const std::atomic<bool>* cancelled) {
  start_first::Acts acts;
  acts.slots = rt.slot_driver.get();
  std::shared_ptr<Driver> driver = rt.driver;
  acts.promote = [driver](const std::string& v) -> Status {
    if (Status st = driver->activate(v); !st.ok())
      return make_error("swap", "pointing current at " + v + " failed: " + st.error().message);
    crash_point("after_promote");
    return Status::Ok();
  };
  auto probes = rt.slot_probes;
  acts.verify = [probes, p, &clock, sleep, cancelled](const std::string& slot) -> Status {
    VerifyResult r = Verifier(clock, sleep).run(probes.at(slot), p, cancelled);
    if (r.healthy) return Status::Ok();
    return make_error(r.cancelled ? "cancelled" : "unhealthy", "slot " + slot + ": " + r.message);
  };
  acts.verify_for = [probes, p, &clock, sleep, cancelled](const std::string& slot, Millis ms) {
    return verify_for(probes.at(slot), p, clock, sleep, cancelled)(ms);
  };
  auto lifecycles = rt.slot_lifecycles;
  acts.lifecycle = [lifecycles](const std::string& slot) -> traffic::Lifecycle* {
    auto it = lifecycles.find(slot);
    return it == lifecycles.end() ? nullptr : it->second.get();
  };
  return acts;
}

}  // namespace

// The new release starts in the slot the live instance does not use (chosen once, journaled
// with the swapping record); `promoted`: resumed after `current` was switched to it.
void Agent::begin_start_first(bool promoted) {
  auto& a = *state_.active;
  const ServiceRuntime& rt = svc();
  if (a.slot.empty()) {
    auto live = rt.slot_driver->live_slot();
    if (!live) return fail_before_swap("cannot tell which slot runs " + a.order.service + ": " + live.error().message);
    a.slot = promoted ? *live : next_slot(rt.slot_driver->slots(), *live);
  }
  if (!promoted) {
    set_phase(phase::kSwapping, (a.from_version.empty() ? "(none)" : a.from_version) + " -> " + a.order.version +
                                    " in slot " + a.slot + ", start-first");
    if (!persist_or_note()) return fail_before_swap("state write failed: " + state_error_);
    crash_point("before_swap");
  } else {
    lg()->info("order {}: {} runs in slot {} (start-first, resumed after the switch of current)", a.order.order_id,
               a.order.version, a.slot);
  }
  send_held();
  const std::string to = a.slot, from = other_slot(rt.slot_driver->slots(), a.slot);
  traffic::StepContext ctx = step_context(/*revert=*/false);
  VerifyPolicy p = policy();
  const Clock& clock = clock_;
  auto sleep = sleep_;
  Worker* worker = &worker_;
  const ServiceRuntime* rtp = &rt;  // services_ is fixed for the agent's life
  worker_.run("start_first",
              [rtp, p, &clock, sleep, worker, ctx, to, from, promoted](const std::atomic<bool>& cancelled) {
                start_first::Acts acts = start_first_acts(*rtp, p, clock, sleep, &cancelled);
                return promoted ? start_first::resume_promoted(ctx, to, from, acts, step_observer(worker), &cancelled)
                                : start_first::update(ctx, to, from, acts, step_observer(worker), &cancelled);
              });
}

void Agent::on_start_first_done(const WorkResult& r) {
  mark_timing("verify");
  if (r.status.ok()) return succeed();
  if (r.status.error().code != start_first::kStopOld) return begin_revert(r.status.error().message);
  // Promoted, verified, in traffic; the old instance would not stop: a failed host, no revert.
  const auto& a = *state_.active;
  fail_keeping_new(r.status.error().message + "; " + a.order.version + " runs in slot " + a.slot +
                   ", verified, in traffic");
}

// Before the switch of `current` the old instance was never touched: stop the new one. After it
// (an agent restarted past the switch whose new instance then failed): the same start-first
// steps towards the previous release, in the other slot.
void Agent::begin_start_first_revert() {
  auto& a = *state_.active;
  const ServiceRuntime& rt = svc();
  if (a.slot.empty()) {
    std::string running = disk_version(a.order.service);
    return finish({a.order.order_id, a.order.rollout_id, a.order.service, "failed", running, a.failure, {}});
  }
  const std::string to = a.slot, from = other_slot(rt.slot_driver->slots(), a.slot);
  sf_reverse_ = disk_version(a.order.service) == a.order.version && !a.from_version.empty();
  progress(phase::kReverting, sf_reverse_ ? "reverting to " + a.from_version + " in slot " + from + ": " + a.failure
                                          : "stopping the new instance in slot " + to + ": " + a.failure);
  traffic::StepContext ctx = step_context(/*revert=*/sf_reverse_);
  VerifyPolicy p = policy();
  const Clock& clock = clock_;
  auto sleep = sleep_;
  Worker* worker = &worker_;
  const ServiceRuntime* rtp = &rt;
  const bool reverse = sf_reverse_;
  worker_.run("start_first_revert",
              [rtp, p, &clock, sleep, worker, ctx, to, from, reverse](const std::atomic<bool>& cancelled) {
                start_first::Acts acts = start_first_acts(*rtp, p, clock, sleep, &cancelled);
                if (reverse) return start_first::update(ctx, from, to, acts, step_observer(worker), &cancelled);
                return start_first::abandon(ctx, to, from, acts);
              });
}

void Agent::on_start_first_reverted(const WorkResult& r) {
  mark_timing("revert");
  auto& a = *state_.active;
  const std::string svc_name = a.order.service;
  const std::string other = other_slot(svc().slot_driver->slots(), a.slot);
  if (!r.status.ok() && !(sf_reverse_ && r.status.error().code == start_first::kStopOld)) {
    std::string running = disk_version(svc_name);
    state_.services[svc_name].current = running;
    return finish({a.order.order_id,
                   a.order.rollout_id,
                   svc_name,
                   "failed",
                   running,
                   a.failure + "; revert failed: " + r.status.error().message,
                   {}});
  }
  if (a.from_version.empty())
    return finish({a.order.order_id,
                   a.order.rollout_id,
                   svc_name,
                   "failed",
                   disk_version(svc_name),
                   a.failure + "; the new instance in slot " + a.slot + " was stopped",
                   {}});
  state_.services[svc_name].current = a.from_version;
  std::string how = sf_reverse_ ? "; reverted to " + a.from_version + " in slot " + other
                                : "; the new instance in slot " + a.slot + " was stopped, " + a.from_version +
                                      " kept running in slot " + other + " untouched";
  if (!r.status.ok()) how += " (" + r.status.error().message + ")";
  finish({a.order.order_id, a.order.rollout_id, svc_name, "failed_reverted", a.from_version, a.failure + how, {}});
}

}  // namespace gantry::agent
