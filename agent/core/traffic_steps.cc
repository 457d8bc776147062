// Traffic steps around the swap (agent/traffic/lifecycle.h): the drain before it, the Progress
// of each step the worker begins, and traffic allowed back after an order that failed before
// its swap.
#include "agent/core/agent.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "agent/core/worker_acts.h"
#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

bool Agent::has_traffic_steps() const {
  return state_.active && services_.at(state_.active->order.service).lifecycle != nullptr;
}

traffic::StepContext Agent::step_context(bool revert) const {
  const auto& a = *state_.active;
  traffic::StepContext c;
  c.service = a.order.service;
  c.root = services_.at(a.order.service).config.root;
  c.order_id = a.order.order_id;
  c.rollout_id = a.order.rollout_id;
  c.kind = revert ? "revert" : a.order.kind;
  c.from_version = revert ? a.order.version : a.from_version;
  c.to_version = revert ? a.from_version : a.order.version;
  return c;
}

void Agent::begin_drain(AfterDrain next) {
  after_drain_ = next;
  auto lifecycle = svc().lifecycle;
  traffic::StepContext ctx = step_context(/*revert=*/false);
  Worker* worker = &worker_;
  lg()->info("order {}: taking {} out of traffic", state_.active->order.order_id, ctx.service);
  worker_.run("drain", [lifecycle, ctx, worker](const std::atomic<bool>& cancelled) {
    return lifecycle->block(ctx, step_observer(worker), &cancelled);
  });
}

void Agent::on_drained(const WorkResult& r) {
  mark_timing("drain");
  if (!r.status.ok()) {
    // The lifecycle allowed traffic back. Before the swap nothing changed; resumed after it,
    // the new release is in place unverified: revert it.
    if (after_drain_ == AfterDrain::kRestart) return begin_revert(r.status.error().message);
    return fail_before_swap(r.status.error().message);
  }
  traffic_blocked_ = true;
  if (after_drain_ == AfterDrain::kSwap)
    begin_swap();
  else
    begin_restart();
}

// A traffic step began on the worker: its Progress, stamped with when it began.
void Agent::on_step(const WorkResult& r) {
  std::string ph = r.step.substr(std::string_view(kStepPrefix).size());
  std::string about;  // start-first steps name their slot: "<phase>|<detail>"
  if (auto bar = ph.find('|'); bar != std::string::npos) {
    about = ph.substr(bar + 1);
    ph.resize(bar);
  }
  if (announce_verifying_at_) announce_verifying();  // verifying came first
  if (ph == traffic::step::kTrafficAllowed) traffic_blocked_ = false;
  const Millis at = clock_.wall_ms() - std::max<int64_t>(0, steady_us() - r.at_us) / 1000;
  lg()->info("order {}: {}", state_.active->order.order_id, ph);
  std::string detail = ph == traffic::step::kDraining           ? "blocking traffic"
                       : ph == traffic::step::kWaitingInflight  ? "waiting for in-flight work"
                       : ph == traffic::step::kAllowingTraffic  ? "allowing traffic"
                       : ph == traffic::step::kTrafficAllowed   ? "back in traffic"
                       : ph == traffic::step::kVerifyingTraffic ? "verifying with traffic"
                       : !about.empty()                         ? ph
                                                                : "revert: " + ph;
  if (!about.empty()) detail += ": " + about;
  progress(ph, detail, at);
}

// Traffic is allowed back after an order that failed before its swap.
void Agent::on_unblocked(const WorkResult& r) {
  traffic_blocked_ = false;
  std::string msg = std::move(unblock_failure_);
  unblock_failure_.clear();
  msg += r.status.ok() ? "; traffic allowed back" : "; allowing traffic back failed: " + r.status.error().message;
  fail_before_swap(std::move(msg));
}

}  // namespace gantry::agent
