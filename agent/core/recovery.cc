// Recovery at start (Agent::start): loads the journal (or, corrupt, ignores it), takes what
// runs from disk, answers orders for services no longer configured, and resumes an order
// interrupted by a restart of the agent in the phase its journal record names.
#include "agent/core/agent.h"

#include <deque>
#include <vector>

#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

// The result of an order for a service no longer configured: it cannot run.
proto::Report not_configured(const proto::Order& o) {
  return {o.order_id, o.rollout_id, o.service, "failed", "", "service " + o.service + " is not configured on this host",
          {}};
}

}  // namespace

Status Agent::start() {
  auto loaded = store_.load();
  if (!loaded) {
    // A corrupt journal must not keep the host from running; disk tells what runs.
    lg()->error("ignoring the journal: {}", loaded.error().message);
    state_ = AgentState{};
  } else {
    state_ = std::move(*loaded);
  }
  for (auto& [name, rt] : services_) {
    if (Status st = rt.driver->cleanup(); !st.ok()) lg()->warn("{}: cleanup: {}", name, st.error().message);
    auto& rec = state_.services[name];
    rec.current = disk_version(name);
    lg()->info("{} runs {}", name, rec.current.empty() ? "nothing yet" : rec.current);
  }
  // Orders for services no longer configured cannot run; answer them.
  std::deque<proto::Order> keep;
  std::vector<proto::Report> dropped;
  for (auto& o : state_.queue) {
    if (services_.count(o.service))
      keep.push_back(o);
    else
      dropped.push_back(not_configured(o));
  }
  state_.queue = std::move(keep);
  for (auto& r : dropped) state_.add_result(r);
  if (state_.active && !services_.count(state_.active->order.service)) {
    state_.add_result(not_configured(state_.active->order));
    state_.active.reset();
  }
  Status saved = persist();
  if (!saved.ok()) lg()->error("journal not writable at start: {}", saved.error().message);

  if (state_.active) {
    auto& a = *state_.active;
    std::string cur = state_.services[a.order.service].current;
    order_started_ = phase_started_ = clock_.now_ms();
    times_ = StepTimes{};
    times_.received_us = times_.started_us = times_.last_us = steady_us();
    lg()->warn("resuming order {} ({} {} -> {}), interrupted while {}; {} runs {}", a.order.order_id, a.order.service,
               a.from_version, a.order.version, a.phase, a.order.service, cur.empty() ? "nothing" : cur);
    if (a.phase == phase::kFetching || a.phase == phase::kStaging) {
      begin_fetch();  // from the start; the download resumes from its partial file
    } else if (a.phase == phase::kReverting) {
      begin_revert(a.failure);
    } else if (cur == a.order.version) {
      begin_restart();  // swapped (or further): restart and verify what runs, then decide
    } else {
      begin_swap();  // the swap did not happen yet
    }
  }
  start_next();
  return Status::Ok();
}

}  // namespace gantry::agent
