// The active order's job: it starts from the queue (start_next), swaps (begin_swap), restarts
// and verifies as one worker job (begin_restart, on_restarted, announce_verifying), and
// on_work_done routes each worker result to the next step. Its phases, Progress messages and
// timings are kept here too (set_phase, progress, mark_timing).
#include "agent/core/agent.h"

#include <algorithm>
#include <memory>
#include <string>

#include "agent/core/fault.h"
#include "agent/core/worker_acts.h"
#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

// Progress{verifying} (and its log line) waits this long after the restart command ended, or
// until the probes end, whichever is first: a first probe that passes at once is not slowed by
// the send (the zmq I/O thread and the coordinator waking on a 2-core host), and the Progress
// then goes out just before the result record's fdatasync, overlapping it.
constexpr Millis kAnnounceVerifyingMs = 20;

}  // namespace

ServiceRuntime& Agent::svc() { return services_.at(state_.active->order.service); }

ReleaseId Agent::release() const {
  const auto& o = state_.active->order;
  return ReleaseId{o.service, o.version, o.sha256, o.size};
}

VerifyPolicy Agent::policy() const {
  const auto& o = state_.active->order;
  const auto& c = services_.at(o.service).config;
  VerifyPolicy p;
  p.probe_interval_ms = c.probe_interval_ms;
  p.min_healthy_ms = o.min_healthy_ms ? o.min_healthy_ms : c.min_healthy_ms;
  p.healthy_deadline_ms = o.healthy_deadline_ms ? o.healthy_deadline_ms : c.healthy_deadline_ms;
  return p;
}

void Agent::progress(const std::string& ph, const std::string& detail, Millis at_wall_ms) {
  proto::Progress p{state_.active->order.order_id, ph, detail};
  p.at_ms = static_cast<uint64_t>(std::max<Millis>(0, at_wall_ms ? at_wall_ms : clock_.wall_ms()));
  send(p);
}

void Agent::mark_timing(const char* name) {
  int64_t now_us = steady_us();
  times_.phase_us[name] += now_us - times_.last_us;
  times_.last_us = now_us;
  Millis now = clock_.now_ms();
  state_.active->timings_ms[name] = static_cast<uint64_t>(std::max<Millis>(0, now - phase_started_));
  phase_started_ = now;
}

void Agent::set_phase(const char* ph, const std::string& detail) {
  state_.active->phase = ph;
  lg()->info("order {}: {} ({})", state_.active->order.order_id, ph, detail);
}

void Agent::start_next() {
  if (state_.active || worker_.busy() || state_.queue.empty()) return;
  ActiveOrder a;
  a.order = state_.queue.front();
  state_.queue.pop_front();
  a.phase = phase::kFetching;
  a.from_version = disk_version(a.order.service);
  a.started_wall_ms = clock_.wall_ms();
  times_ = StepTimes{};
  times_.started_us = times_.last_us = times_.received_us = steady_us();
  if (auto it = arrivals_.find(a.order.order_id); it != arrivals_.end()) {
    times_.received_us = it->second.received_us;
    times_.accept_us = it->second.accept_us;
    times_.journal_us = it->second.journal_us;
    times_.journal_writes = 1;
    arrivals_.erase(it);
  }
  state_.active = std::move(a);
  state_error_.clear();
  order_started_ = phase_started_ = clock_.now_ms();
  begin_fetch();
}

void Agent::begin_swap(bool journaled) {
  if (svc().start_first()) return begin_start_first(/*promoted=*/false);
  if (has_traffic_steps() && !traffic_blocked_) return begin_drain(AfterDrain::kSwap);
  auto& a = *state_.active;
  set_phase(phase::kSwapping, a.from_version + " -> " + a.order.version);
  if (!prepared_) prepare_restart();  // as accept_and_swap
  if (!journaled && !persist_or_note()) {
    fail_before_swap("state write failed: " + state_error_);
    return;
  }
  progress(phase::kSwapping, (a.from_version.empty() ? "(none)" : a.from_version) + " -> " + a.order.version);
  crash_point("before_swap");
  // The rename only: the fsync that makes it durable runs while the restart command does
  // (begin_restart), before any result is recorded.
  int64_t t0 = steady_us();
  Status st = svc().driver->switch_current(a.order.version);
  times_.activate_us += steady_us() - t0;
  if (!st.ok()) {
    // The rename may or may not have happened: ask the disk.
    if (disk_version(a.order.service) != a.order.version) {
      fail_before_swap("swap failed: " + st.error().message);
      return;
    }
    state_.services[a.order.service].current = a.order.version;
    mark_timing("swap");
    begin_revert("swap failed: " + st.error().message);
    return;
  }
  crash_point("after_swap");
  state_.services[a.order.service].current = a.order.version;
  mark_timing("swap");
  begin_restart();
}

// The active order's restart, made ready ahead of its swapping record and swap (prepared_).
void Agent::prepare_restart() {
  const int64_t t0 = steady_us();
  prepared_ = svc().driver->prepare_restart(state_.active->order.version);
  times_.prepare_us += steady_us() - t0;
}

void Agent::begin_restart() {
  // Start-first, resumed after its promotion (Agent::start: `current` names the new release).
  if (svc().start_first()) return begin_start_first(/*promoted=*/true);
  // Resumed after the swap (Agent::start): out of traffic before the restart.
  if (has_traffic_steps() && !traffic_blocked_) return begin_drain(AfterDrain::kRestart);
  auto& a = *state_.active;
  a.phase = phase::kRestarting;
  // No journal write here: the swapping record (from_version, written before the swap) plus
  // `current` on disk already say what a restart must do — an agent killed from here until
  // the verifying write resumes with restart + verify (Agent::start), which is this phase.
  //
  // Restart and verify are one job: the worker runs the restart command, posts a "restart"
  // milestone and goes straight on probing, without waiting for the main loop to hand it a
  // second job; the main loop handles the milestone (timing, the verifying record, Progress)
  // while the probes run. The job starts first, the log line and Progress follow.
  auto driver = svc().driver;
  std::string v = a.order.version;
  ProbeList probes = svc().probes;
  VerifyPolicy p = policy();
  const Clock& clock = clock_;
  auto sleep = sleep_;
  Worker* worker = &worker_;
  std::shared_ptr<traffic::Lifecycle> lifecycle = svc().lifecycle;
  traffic::StepContext ctx = step_context(/*revert=*/false);
  restart_failure_.clear();
  swap_sync_failure_.clear();
  // The restart begins here, on this thread: with the shell prepared before the swap, the
  // command starts at once, whenever the worker thread wakes up to wait for it.
  std::shared_ptr<PreparedRestart> restart = std::move(prepared_);
  if (!restart) restart = driver->prepare_restart(v);  // resumed after a restart of the agent
  restart_started_us_ = steady_us();
  restart_done_us_ = 0;
  restart->start();
  worker_.run("verify",
              [driver, restart, probes, p, &clock, sleep, worker, lifecycle,
               ctx](const std::atomic<bool>& cancelled) -> Status {
                const int64_t t0 = steady_us();
                Status st = restart->finish();
                crash_point("during_restart");
                worker->milestone("restart", st, steady_us() - t0);
                if (!st.ok()) return st;  // the main loop reverts when it takes this result
                Verifier verifier(clock, sleep, [] { crash_point("during_verify"); });
                VerifyResult r = verifier.run(probes, p, &cancelled);
                if (!r.healthy) return make_error(r.cancelled ? "cancelled" : "unhealthy", r.message);
                if (!lifecycle) return Status::Ok();
                // Verified: only now does the new release get traffic.
                traffic::HostActs acts;
                acts.verify_for = verify_for(probes, p, clock, sleep, &cancelled);
                return lifecycle->allow(ctx, acts, step_observer(worker), &cancelled);
              });
  // Now, with the restart command running, the fsync that makes the swap durable (its disk
  // flush overlaps the command instead of preceding it). A crash before it completes leaves
  // the swapping record: the swap is redone or, if it reached the disk, restarted and verified
  // again. A failed fsync reverts once the job ends; no result is recorded before it succeeded.
  const int64_t t1 = steady_us();
  if (Status st = svc().driver->sync_current(); !st.ok()) {
    lg()->error("order {}: making the swap durable failed: {}", a.order.order_id, st.error().message);
    swap_sync_failure_ = st.error().message;
  }
  times_.swap_sync_us += steady_us() - t1;
  lg()->info("order {}: {} ({})", a.order.order_id, phase::kRestarting, v);
  progress(phase::kRestarting, "running restart command");
  send_held();
}

// The restart command has finished; the worker is already probing (unless it failed).
void Agent::on_restarted(const WorkResult& r) {
  auto& a = *state_.active;
  times_.restart_command_us += std::max<int64_t>(0, r.at_us - restart_started_us_);
  restart_done_us_ = r.at_us;
  mark_timing("restart");
  if (!r.status.ok()) {
    restart_failure_ = r.status.error().message;  // the job ends at once; revert then
    return;
  }
  a.phase = phase::kVerifying;
  // Probing changes nothing on the host, so the verifying record guards no act: it is written
  // while the probes run, without an fdatasync of its own — the result record's fdatasync makes
  // it durable (a crash before then resumes from the swapping record with the same restart +
  // verify). A failed write still reverts, once the probes are done.
  verify_unjournaled_ = !persist_or_note(/*lazy=*/true);
  announce_verifying_at_ = std::max<Millis>(1, clock_.now_ms() + kAnnounceVerifyingMs);
}

// The verifying phase's log line and Progress (kAnnounceVerifyingMs).
void Agent::announce_verifying() {
  announce_verifying_at_ = 0;
  if (!state_.active || state_.active->phase != phase::kVerifying) return;
  const auto& a = *state_.active;
  lg()->info("order {}: {} ({})", a.order.order_id, phase::kVerifying, a.order.version);
  VerifyPolicy p = policy();
  progress(phase::kVerifying, "probing: healthy for " + std::to_string(p.min_healthy_ms) + " ms within " +
                                  std::to_string(p.healthy_deadline_ms) + " ms");
}

void Agent::on_work_done(const WorkResult& r) {
  if (!state_.active) return;
  auto& a = *state_.active;
  if (!r.status.ok() && r.status.error().code == "cancelled") return;  // shutting down; the journal resumes it
  if (!r.final && r.step.rfind(kStepPrefix, 0) == 0) return on_step(r);
  if (r.step == "drain") return on_drained(r);
  if (r.step == "unblock") return on_unblocked(r);
  if (r.step == "start_first") return on_start_first_done(r);
  if (r.step == "start_first_revert") return on_start_first_reverted(r);
  if (r.step == "digest") {
    if (!r.status.ok()) return fail_before_swap(r.status.error().message);
    crash_point("after_fetch");
    mark_timing("fetch");
    begin_stage();
  } else if (r.step == "stage") {
    if (!r.status.ok()) return fail_before_swap("staging failed: " + r.status.error().message);
    crash_point("after_stage");
    mark_timing("stage");
    begin_swap();
  } else if (r.step == "restart" && !r.final) {
    on_restarted(r);
  } else if (r.step == "verify") {
    if (announce_verifying_at_) announce_verifying();  // before the result (and its fdatasync)
    if (!swap_sync_failure_.empty()) {
      std::string why = "swap failed: " + swap_sync_failure_;
      swap_sync_failure_.clear();
      restart_failure_.clear();
      return begin_revert(why);
    }
    if (!restart_failure_.empty()) {
      std::string why = std::move(restart_failure_);
      restart_failure_.clear();
      return begin_revert(why);
    }
    if (restart_done_us_) times_.probe_us += std::max<int64_t>(0, r.at_us - restart_done_us_);
    mark_timing("verify");
    if (verify_unjournaled_) {
      verify_unjournaled_ = false;
      return begin_revert("state write failed: " + state_error_);
    }
    if (!r.status.ok() && r.status.error().code == traffic::failure::kAllowTraffic)
      return fail_after_allow_failed(r.status.error().message);
    if (!r.status.ok()) return begin_revert(r.status.error().message);
    succeed();
  } else if (r.step == "revert") {
    mark_timing("revert");
    std::string svc_name = a.order.service;
    if (r.status.ok()) {
      state_.services[svc_name].current = a.from_version;
      finish({a.order.order_id,
              a.order.rollout_id,
              svc_name,
              "failed_reverted",
              a.from_version,
              a.failure + "; reverted to " + a.from_version,
              {}});
    } else {
      std::string running = disk_version(svc_name);
      state_.services[svc_name].current = running;
      finish({a.order.order_id,
              a.order.rollout_id,
              svc_name,
              "failed",
              running,
              a.failure + "; revert to " + a.from_version + " also failed: " + r.status.error().message,
              {}});
    }
  }
}

}  // namespace gantry::agent
