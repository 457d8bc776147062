// How the active order ends: succeed, fail before the swap (traffic allowed back first when
// it was drained), fail verified but out of traffic, and finish() (the Report journaled, then
// sent, and the order's `timings:` log line).
#include "agent/core/agent.h"

#include <algorithm>
#include <set>
#include <string>

#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

// Verified but not back in traffic: a failed host that runs the new release, out of rotation.
void Agent::fail_after_allow_failed(std::string message) {
  const auto& a = *state_.active;
  fail_keeping_new(message + "; " + a.order.version + " runs, verified, out of traffic");
}

// The new release runs, verified, and stays: recorded as current, the order reported failed.
void Agent::fail_keeping_new(const std::string& message) {
  auto& a = *state_.active;
  auto& rec = state_.services[a.order.service];
  if (!a.from_version.empty() && a.from_version != a.order.version) rec.previous = a.from_version;
  rec.current = a.order.version;
  finish({a.order.order_id, a.order.rollout_id, a.order.service, "failed", a.order.version, message, {}});
}

void Agent::succeed() {
  auto& a = *state_.active;
  auto& rec = state_.services[a.order.service];
  if (!a.from_version.empty() && a.from_version != a.order.version) rec.previous = a.from_version;
  rec.current = a.order.version;
  std::string prev = rec.previous;
  proto::Report r{a.order.order_id,
                  a.order.rollout_id,
                  a.order.service,
                  "succeeded",
                  a.order.version,
                  a.order.service + " " + a.order.version + " is healthy",
                  {}};
  ServiceRuntime& rt = svc();
  finish(std::move(r));
  std::set<std::string> keep = {rec.current};
  if (!prev.empty()) keep.insert(prev);
  if (Status st = rt.driver->prune(rt.config.retain, keep); !st.ok()) lg()->warn("prune: {}", st.error().message);
}

void Agent::fail_before_swap(std::string message) {
  if (traffic_blocked_ && has_traffic_steps()) {
    // Drained for this order, which now ends with nothing changed: traffic back first.
    auto lifecycle = svc().lifecycle;
    traffic::StepContext ctx = step_context(/*revert=*/false);
    unblock_failure_ = std::move(message);
    if (worker_.run("unblock", [lifecycle, ctx](const std::atomic<bool>&) { return lifecycle->unblock(ctx); })) return;
    message = std::move(unblock_failure_);
  }
  fetcher_.reset();
  auto& a = *state_.active;
  std::string running = disk_version(a.order.service);
  if (Status st = svc().driver->cleanup(); !st.ok()) lg()->warn("cleanup: {}", st.error().message);
  // A checked artifact whose order failed (refused archive, failed load) is not kept; a partial
  // download is, so the same release ordered again resumes where its fetch stopped.
  if (Status st = svc().driver->prune_downloads(a.order.sha256, /*keep_complete=*/false); !st.ok())
    lg()->warn("cannot remove downloads of {}: {}", a.order.service, st.error().message);
  finish({a.order.order_id, a.order.rollout_id, a.order.service, "failed", running, message, {}});
}

void Agent::finish(proto::Report r) {
  prepared_.reset();
  traffic_blocked_ = false;
  send_held();
  auto& a = *state_.active;
  r.timings_ms = a.timings_ms;
  r.timings_ms["total"] = static_cast<uint64_t>(std::max<Millis>(0, clock_.now_ms() - order_started_));
  if (!state_error_.empty() && r.message.rfind("state write failed:", 0) != 0) {
    // The host runs what running_version says, but the journal could not record it.
    if (r.outcome == "succeeded") r.outcome = "failed";
    r.message = "state write failed: " + state_error_ + "; " + r.message;
  }
  state_.add_result(r);
  state_.active.reset();
  fetcher_.reset();
  Status saved = persist();
  times_.journal_us += last_persist_us_;
  ++times_.journal_writes;
  if (Status st = saved; !st.ok() && r.message.rfind("state write failed:", 0) != 0) {
    if (r.outcome == "succeeded") r.outcome = "failed";
    r.message = "state write failed: " + st.error().message + "; " + r.message;
    state_.add_result(r);
  }
  state_error_.clear();
  lg()->info("order {} {}: {} (running {})", r.order_id, r.outcome, r.message,
             r.running_version.empty() ? "nothing" : r.running_version);
  send(r);
  log_timings(r.order_id);
  if (state_.queue.empty()) store_.maintain(state_);  // idle: compaction, off the order's path
}

void Agent::log_timings(const std::string& order_id) {
  const int64_t end = steady_us();
  auto ph = [&](const char* k) {
    auto it = times_.phase_us.find(k);
    return it == times_.phase_us.end() ? int64_t{0} : it->second;
  };
  // One line per order, `key=<n>us` pairs: the phases add up to total (arrival -> report
  // sent); journal, activate, restart_command and probe are parts of them.
  lg()->info(
      "order {} timings: total={}us accept={}us queued={}us fetch={}us stage={}us swap={}us restart={}us "
      "verify={}us revert={}us report={}us journal={}us journal_writes={} activate={}us swap_sync={}us "
      "restart_command={}us probe={}us checks={}us prepare={}us",
      order_id, end - times_.received_us, times_.accept_us,
      std::max<int64_t>(0, times_.started_us - times_.received_us - times_.accept_us), ph("fetch"), ph("stage"),
      ph("swap"), ph("restart"), ph("verify"), ph("revert"), end - times_.last_us, times_.journal_us,
      times_.journal_writes, times_.activate_us, times_.swap_sync_us, times_.restart_command_us, times_.probe_us,
      times_.checks_us, times_.prepare_us);
}

}  // namespace gantry::agent
