// Order intake (Agent::on_order): orders of a deposed coordinator (a stale epoch) refused,
// duplicates answered from the journal, the release signature checked (ReleaseSignatures),
// updates of stopped rollouts refused (StoppedRollouts), the order journaled in the queue before
// its OrderAck, or, idle with the release installed, accepted and swapped with one journal
// record (accept_and_swap).
#include "agent/core/agent.h"

#include <string>

#include "agent/core/epoch_gate.h"
#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

void Agent::on_order(const proto::Order& o) {
  const int64_t received_us = steady_us();
  if (!observe_epoch(o.epoch, "order " + o.order_id)) {
    // Sent by a deposed coordinator: nothing runs and nothing is recorded (the leader may send
    // the same order id under its own epoch, and that one must run).
    send(proto::OrderAck{o.order_id, "rejected", stale_epoch_message(o.epoch, state_.highest_epoch)});
    return;
  }
  if (const proto::Report* r = state_.find_result(o.order_id)) {
    lg()->info("order {} already finished ({}); re-sending its report", o.order_id, r->outcome);
    send(proto::OrderAck{o.order_id, "duplicate", "already finished: " + r->outcome});
    send(*r);
    return;
  }
  bool known = state_.active && state_.active->order.order_id == o.order_id;
  for (const auto& q : state_.queue) known = known || q.order_id == o.order_id;
  if (known) {
    send(proto::OrderAck{o.order_id, "duplicate", "in progress"});
    return;
  }
  if (const std::string* kind = o.kind == "update" ? stopped_.stopped_by(o.rollout_id, o.service) : nullptr) {
    // It reached this host after the rollout's stop signal: the coordinator decided to stop
    // before this host started, so it does not start now.
    std::string msg = "refused: rollout " + std::to_string(o.rollout_id) + " of " + o.service + " was stopped (" +
                      *kind + " signal) before this order arrived";
    lg()->warn("order {}: {}", o.order_id, msg);
    proto::Report r{o.order_id, o.rollout_id, o.service, "failed", disk_version(o.service), msg, {}};
    state_.add_result(r);
    (void)persist();
    send(proto::OrderAck{o.order_id, "rejected", msg});
    send(r);
    return;
  }
  if (Status st = signatures_.check(o); !st.ok()) {
    // The coordinator cannot make this host install anything a release key did not sign.
    std::string msg = "refused release " + o.version + " of " + o.service + ": " + st.error().message;
    lg()->error("order {}: {}", o.order_id, msg);
    proto::Report r{
        o.order_id, o.rollout_id, o.service, "failed", services_.count(o.service) ? disk_version(o.service) : "", msg,
        {}};
    state_.add_result(r);
    (void)persist();
    send(proto::OrderAck{o.order_id, "rejected", msg});
    send(r);
    return;
  }
  if (!services_.count(o.service)) {
    std::string msg = "service " + o.service + " is not configured on this host";
    lg()->warn("rejecting order {}: {}", o.order_id, msg);
    proto::Report r{o.order_id, o.rollout_id, o.service, "failed", "", msg, {}};
    state_.add_result(r);
    (void)persist();
    send(proto::OrderAck{o.order_id, "rejected", msg});
    send(r);
    return;
  }
  if (!state_.active && state_.queue.empty() && !worker_.busy()) {
    // Idle: the order starts right away. If its release is already installed, its next write
    // would be the swapping record, so that one record is also its acceptance (one write).
    // (Not with traffic steps: the drain comes before the swapping record.)
    if (!svc_of(o).lifecycle && !svc_of(o).start_first() &&
        svc_of(o).driver->has_release(ReleaseId{o.service, o.version, o.sha256, o.size})) {
      accept_and_swap(o, received_us, steady_us() - received_us);
      return;
    }
    not_installed_ = o.order_id;  // begin_fetch need not ask the driver again
  }
  state_.queue.push_back(o);
  if (Status st = persist(); !st.ok()) {
    state_.queue.pop_back();
    reject_unjournaled(o, st);
    return;
  }
  acknowledge(o);
  arrivals_[o.order_id] = Arrival{received_us, steady_us() - received_us, last_persist_us_};
  start_next();
}

// An order that could not be journaled is refused, and its result is that failure (the host
// keeps what it runs).
void Agent::reject_unjournaled(const proto::Order& o, const Status& st) {
  std::string msg = "state write failed: " + st.error().message;
  proto::Report r{o.order_id, o.rollout_id, o.service, "failed", disk_version(o.service), msg, {}};
  state_.add_result(r);
  send(proto::OrderAck{o.order_id, "rejected", msg});
  send(r);
}

// Once the order is durable: the OrderAck.
void Agent::acknowledge(const proto::Order& o) {
  lg()->info("accepted order {}: {} {} {} (rollout {})", o.order_id, o.kind, o.service, o.version, o.rollout_id);
  send(proto::OrderAck{o.order_id, "accepted", ""});
}

// The order starts at once with the swap. Its one journal record says: active, swapping, from
// `from_version`. A restart finds exactly what the queued path's swapping record would have
// left (Agent::start: `current` not yet the new version -> swap, else restart + verify), and a
// coordinator resending the order meanwhile gets "duplicate" (it is the active order).
void Agent::accept_and_swap(const proto::Order& o, int64_t received_us, int64_t checks_us) {
  ActiveOrder a;
  a.order = o;
  a.phase = phase::kSwapping;
  a.from_version = disk_version(o.service);
  a.started_wall_ms = clock_.wall_ms();
  a.timings_ms["fetch"] = 0;
  a.timings_ms["stage"] = 0;
  state_.active = std::move(a);
  times_ = StepTimes{};
  times_.received_us = received_us;
  times_.checks_us = checks_us;
  // The restart command's shell starts up while the record is written and the swap made; it
  // runs the command only once begin_restart lets it (dropped, it runs nothing).
  prepare_restart();
  if (Status st = persist(); !st.ok()) {
    prepared_.reset();
    state_.active.reset();
    reject_unjournaled(o, st);
    return;
  }
  // Its OrderAck and the Progress of its first phases go out together once the restart has
  // begun (begin_restart), or with its Report if it ends before: one wake-up of the sockets'
  // I/O threads, here and at the coordinator, while the shell starts and runs, instead of three.
  holding_ = true;
  acknowledge(o);
  times_.started_us = times_.last_us = steady_us();
  times_.accept_us = times_.started_us - received_us;
  state_error_.clear();
  order_started_ = phase_started_ = clock_.now_ms();
  progress(phase::kFetching, "release " + o.version + " already installed; no download");
  begin_swap(/*journaled=*/true);
}

void Agent::set_release_keys(std::vector<std::string> keys) { signatures_.set_keys(std::move(keys)); }

}  // namespace gantry::agent
