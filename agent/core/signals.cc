// Signals from the coordinator (Agent::on_signal): one of a deposed coordinator (a stale epoch)
// is ignored; an abort or rollback of a rollout cancels its queued update orders and is
// remembered (StoppedRollouts) so that its later update orders are refused at intake.
#include "agent/core/agent.h"

#include <deque>
#include <vector>

#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

void Agent::on_signal(const proto::Signal& s) {
  // A deposed coordinator's signal (observe_epoch logs it) stops nothing.
  if (!observe_epoch(s.epoch, s.kind + " signal for rollout " + std::to_string(s.rollout_id))) return;
  // Remembered (the newest few, in memory): a later update order of the same rollout is
  // refused (on_order).
  stopped_.remember(s.rollout_id, s.service, s.kind);
  std::deque<proto::Order> keep;
  std::vector<proto::Report> cancelled;
  for (auto& o : state_.queue) {
    // Only updates are cancelled: the coordinator sends a rollback Signal right after the
    // rollback orders of the same step, and those must run.
    if (o.rollout_id == s.rollout_id && o.service == s.service && o.kind == "update") {
      cancelled.push_back({o.order_id,
                           o.rollout_id,
                           o.service,
                           "failed",
                           state_.services[o.service].current,
                           "cancelled by " + s.kind + " signal",
                           {}});
      arrivals_.erase(o.order_id);
    } else {
      keep.push_back(std::move(o));
    }
  }
  state_.queue = std::move(keep);
  if (cancelled.empty()) return;
  for (auto& r : cancelled) state_.add_result(r);
  (void)persist();
  for (auto& r : cancelled) {
    lg()->info("order {} cancelled by {} signal for rollout {}", r.order_id, s.kind, s.rollout_id);
    send(r);
  }
}

}  // namespace gantry::agent
