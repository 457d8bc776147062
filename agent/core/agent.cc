#include "agent/core/agent.h"

#include <chrono>
#include <set>

#include "agent/core/fault.h"
#include "agent/core/start_first.h"
#include "common/release/manifest.h"
#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/version.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

constexpr Millis kWorkPollMs = 100;
// Worker milestones named "step:<phase>" are traffic steps beginning (Agent::on_step).
constexpr const char* kStepPrefix = "step:";

traffic::StepObserver step_observer(Worker* worker) {
  return [worker](const std::string& ph) { worker->milestone(kStepPrefix + ph, Status::Ok(), 0); };
}

// The probes once more for `ms`, passing throughout (post-allow verification).
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
// Progress{verifying} (and its log line) waits this long after the restart command ended, or
// until the probes end, whichever is first: a first probe that passes at once is not slowed by
// the send (the zmq I/O thread and the coordinator waking on a 2-core host), and the Progress
// then goes out just before the result record's fdatasync, overlapping it.
constexpr Millis kAnnounceVerifyingMs = 20;

}  // namespace

Agent::Agent(std::string host_id, std::map<std::string, std::string> labels,
             std::map<std::string, ServiceRuntime> services, StateStore& store, const Clock& clock, Send send,
             Verifier::Sleep sleep)
    : host_id_(std::move(host_id)),
      labels_(std::move(labels)),
      services_(std::move(services)),
      store_(store),
      clock_(clock),
      send_(std::move(send)),
      sleep_(std::move(sleep)) {}

Agent::~Agent() { shutdown(); }

void Agent::shutdown() { worker_.cancel_and_join(); }

// ---------------------------------------------------------------------------------------------
// Journal

Status Agent::persist(bool lazy) {
  int64_t t0 = steady_us();
  Status st = lazy ? store_.save_lazy(state_) : store_.save(state_);
  last_persist_us_ = steady_us() - t0;
  if (state_.active) {
    times_.journal_us += last_persist_us_;
    ++times_.journal_writes;
  }
  if (!st.ok()) lg()->error("state write failed: {}", st.error().message);
  return st;
}

// Saves; on failure remembers the error for the active order's report and returns false.
bool Agent::persist_or_note(bool lazy) {
  Status st = persist(lazy);
  if (st.ok()) return true;
  if (state_error_.empty()) state_error_ = st.error().message;
  return false;
}

std::string Agent::disk_version(const std::string& service) {
  auto it = services_.find(service);
  if (it == services_.end()) return {};
  auto v = it->second.driver->current_version();
  if (!v) {
    lg()->error("{}: {}", service, v.error().message);
    return state_.services[service].current;
  }
  return *v;
}

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
      dropped.push_back({o.order_id,
                         o.rollout_id,
                         o.service,
                         "failed",
                         "",
                         "service " + o.service + " is not configured on this host",
                         {}});
  }
  state_.queue = std::move(keep);
  for (auto& r : dropped) state_.add_result(r);
  if (state_.active && !services_.count(state_.active->order.service)) {
    const auto& o = state_.active->order;
    state_.add_result({o.order_id,
                       o.rollout_id,
                       o.service,
                       "failed",
                       "",
                       "service " + o.service + " is not configured on this host",
                       {}});
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

// ---------------------------------------------------------------------------------------------
// Messages

void Agent::handle(const proto::Message& m) {
  if (auto* o = std::get_if<proto::Order>(&m))
    on_order(*o);
  else if (auto* c = std::get_if<proto::Chunk>(&m))
    on_chunk(proto::ChunkView{c->sha256, c->offset, c->total_size, c->data});
  else if (auto* e = std::get_if<proto::ErrorMsg>(&m))
    on_error(*e);
  else if (auto* s = std::get_if<proto::Signal>(&m))
    on_signal(*s);
  start_next();
}

void Agent::on_order(const proto::Order& o) {
  const int64_t received_us = steady_us();
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
  if (o.kind == "update") {
    for (const auto& [rollout, service, kind] : stopped_) {
      if (rollout != o.rollout_id || service != o.service) continue;
      // It reached this host after the rollout's stop signal: the coordinator decided to stop
      // before this host started, so it does not start now.
      std::string msg = "refused: rollout " + std::to_string(o.rollout_id) + " of " + o.service + " was stopped (" +
                        kind + " signal) before this order arrived";
      lg()->warn("order {}: {}", o.order_id, msg);
      proto::Report r{o.order_id, o.rollout_id, o.service, "failed", disk_version(o.service), msg, {}};
      state_.add_result(r);
      (void)persist();
      send(proto::OrderAck{o.order_id, "rejected", msg});
      send(r);
      return;
    }
  }
  if (Status st = check_release(o); !st.ok()) {
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

ServiceRuntime& Agent::svc_of(const proto::Order& o) { return services_.at(o.service); }

// The active order's restart, made ready ahead of its swapping record and swap (prepared_).
void Agent::prepare_restart() {
  const int64_t t0 = steady_us();
  prepared_ = svc().driver->prepare_restart(state_.active->order.version);
  times_.prepare_us += steady_us() - t0;
}

void Agent::set_release_keys(std::vector<std::string> keys) {
  release_keys_ = std::move(keys);
  verified_.clear();  // verified with the previous keys
}

Status Agent::check_release(const proto::Order& o) const {
  if (release_keys_.empty()) return Status::Ok();  // insecure_dev without release keys: unsigned allowed
  const release::Manifest* m = nullptr;
  for (auto it = verified_.begin(); it != verified_.end(); ++it) {
    if (it->signature == o.signature && it->manifest == o.manifest) {
      m = &it->parsed;
      break;
    }
  }
  if (!m) {
    auto checked = release::verify(o.manifest, o.signature, release_keys_);
    if (!checked) return checked.error();
    if (verified_.size() >= kVerifiedKept) verified_.pop_front();
    verified_.push_back({o.manifest, o.signature, std::move(*checked)});
    m = &verified_.back().parsed;
  }
  // The fetcher reads exactly o.size bytes and the digest is checked against o.sha256, so
  // binding both to the signed manifest bounds and pins what gets installed.
  return release::check_matches(*m, o.service, o.version, o.sha256, o.size);
}

void Agent::handle_chunk(const proto::ChunkView& c) {
  on_chunk(c);
  start_next();
}

void Agent::on_chunk(const proto::ChunkView& c) {
  if (!fetcher_) return;
  fetcher_->on_chunk(c);
  if (fetcher_->state() == Fetcher::State::kComplete)
    after_fetch_checked();
  else if (fetcher_->state() == Fetcher::State::kFailed)
    fail_before_swap(fetcher_->error());
}

void Agent::on_error(const proto::ErrorMsg& e) {
  if (fetcher_) {
    fetcher_->on_error(e);
    if (fetcher_->state() == Fetcher::State::kFailed) {
      fail_before_swap(fetcher_->error());
      return;
    }
  }
  lg()->warn("coordinator error {}: {}", e.code, e.message);
}

void Agent::on_signal(const proto::Signal& s) {
  // Remembered (the last kMaxStopped, in memory): a later update order of the same rollout is
  // refused (on_order).
  bool seen = false;
  for (const auto& st : stopped_) seen = seen || (st.rollout_id == s.rollout_id && st.service == s.service);
  if (!seen) {
    stopped_.push_back({s.rollout_id, s.service, s.kind});
    while (stopped_.size() > kMaxStopped) stopped_.pop_front();
  }
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

void Agent::on_reconnect() {
  if (fetcher_) fetcher_->resend();
}

// ---------------------------------------------------------------------------------------------
// Loop integration

void Agent::tick() {
  // Milestones first, then the job's result; bounded: a job posts a handful of milestones.
  for (int i = 0; i < 16; ++i) {
    auto r = worker_.take();
    if (!r) break;
    on_work_done(*r);
  }
  if (announce_verifying_at_ && clock_.now_ms() >= announce_verifying_at_) announce_verifying();
  if (fetcher_) {
    fetcher_->check(clock_.now_ms());
    if (fetcher_->state() == Fetcher::State::kFailed) fail_before_swap(fetcher_->error());
  }
  start_next();
}

Millis Agent::next_deadline() const {
  Millis now = clock_.now_ms();
  Millis d = now + 1000;
  if (worker_.busy()) d = std::min(d, now + kWorkPollMs);
  if (announce_verifying_at_) d = std::min(d, announce_verifying_at_);
  if (fetcher_) d = std::min(d, fetcher_->deadline());
  return d;
}

bool Agent::working() const { return state_.active.has_value() || !state_.queue.empty(); }

proto::Hello Agent::hello() const {
  proto::Hello h;
  h.host_id = host_id_;
  h.agent_version = kGantryVersion;
  h.labels = labels_;
  for (const auto& [name, rt] : services_) {
    proto::ServiceStatus s;
    s.name = name;
    auto it = state_.services.find(name);
    if (it != state_.services.end()) {
      s.current_version = it->second.current;
      s.previous_version = it->second.previous;
    }
    s.state = "idle";
    if (state_.active && state_.active->order.service == name) {
      s.state = state_.active->phase == phase::kReverting ? "reverting" : "updating";
      s.order_id = state_.active->order.order_id;
    }
    h.services.push_back(std::move(s));
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Execution

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

void Agent::send(const proto::Message& m) {
  if (holding_)
    held_.push_back(m);
  else
    send_(m);
}

void Agent::send_held() {
  holding_ = false;
  for (const auto& m : held_) send_(m);
  held_.clear();
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

void Agent::begin_fetch() {
  auto& a = *state_.active;
  a.phase = phase::kFetching;
  // No journal write here: the order is already durable in the queue (written before its
  // OrderAck), and a restart finds it there and starts it exactly as this does — nothing has
  // touched the disk yet. The next write (staging, or swapping for an installed release)
  // records it as active.
  if (Status st = check_release(a.order); !st.ok()) {
    // Checked at acceptance too; again here for an order resumed from the journal.
    fail_before_swap("refused release " + a.order.version + " of " + a.order.service + ": " + st.error().message);
    return;
  }
  ServiceRuntime& rt = svc();
  ReleaseId rid = release();
  const bool known_missing = not_installed_ == a.order.order_id;
  not_installed_.clear();
  if (!known_missing && rt.driver->has_release(rid)) {
    set_phase(phase::kFetching, "release already installed");
    progress(phase::kFetching, "release " + rid.version + " already installed; no download");
    a.timings_ms["fetch"] = 0;
    a.timings_ms["stage"] = 0;
    begin_swap();
    return;
  }
  if (Status st = rt.driver->check_installable(rid); !st.ok()) {
    fail_before_swap(st.error().message);
    return;
  }
  // downloads/ holds this release's files only: what other orders left (a fetch that stalled,
  // an artifact an interrupted order never staged) goes now.
  if (Status st = rt.driver->prune_downloads(rid.sha256, /*keep_complete=*/true); !st.ok())
    lg()->warn("cannot remove old downloads of {}: {}", rid.service, st.error().message);
  if (fs::exists(rt.driver->artifact_path(rid.sha256))) {
    // Downloaded and checked before an interruption: go straight to staging.
    mark_timing("fetch");
    begin_stage();
    return;
  }
  set_phase(phase::kFetching, std::to_string(rid.size) + " bytes");
  progress(phase::kFetching, "downloading " + std::to_string(rid.size) + " bytes");
  fetcher_ =
      std::make_unique<Fetcher>(rt.driver->partial_artifact_path(rid.sha256), rid.sha256, rid.size, clock_, send_);
  if (Status st = fetcher_->start(); !st.ok()) {
    fail_before_swap("fetch failed: " + st.error().message);
    return;
  }
  if (fetcher_->state() == Fetcher::State::kComplete) after_fetch_checked();
}

void Agent::after_fetch_checked() {
  // The fetcher hashed the bytes as it wrote them (empty if it found the file complete): the
  // driver checks that digest instead of reading the file back.
  std::string hashed = fetcher_ ? fetcher_->digest() : std::string();
  fetcher_.reset();
  auto driver = svc().driver;
  ReleaseId rid = release();
  worker_.run("digest",
              [driver, rid, hashed](const std::atomic<bool>&) { return driver->finish_download(rid, hashed); });
}

void Agent::begin_stage() {
  set_phase(phase::kStaging, "extracting");
  if (!persist_or_note()) {
    fail_before_swap("state write failed: " + state_error_);
    return;
  }
  progress(phase::kStaging, "extracting release " + state_.active->order.version);
  auto driver = svc().driver;
  ReleaseId rid = release();
  worker_.run("stage", [driver, rid](const std::atomic<bool>&) { return driver->stage(rid); });
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

// ---------------------------------------------------------------------------------------------
// Traffic steps (agent/traffic/lifecycle.h)

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

// Verified but not back in traffic: a failed host that runs the new release, out of rotation.
void Agent::fail_after_allow_failed(std::string message) {
  auto& a = *state_.active;
  auto& rec = state_.services[a.order.service];
  if (!a.from_version.empty() && a.from_version != a.order.version) rec.previous = a.from_version;
  rec.current = a.order.version;
  finish({a.order.order_id,
          a.order.rollout_id,
          a.order.service,
          "failed",
          a.order.version,
          message + "; " + a.order.version + " runs, verified, out of traffic",
          {}});
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

// ---------------------------------------------------------------------------------------------
// Start-first (agent/core/start_first.h)

namespace {

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
  auto& a = *state_.active;
  auto& rec = state_.services[a.order.service];
  if (!a.from_version.empty() && a.from_version != a.order.version) rec.previous = a.from_version;
  rec.current = a.order.version;
  finish({a.order.order_id,
          a.order.rollout_id,
          a.order.service,
          "failed",
          a.order.version,
          r.status.error().message + "; " + a.order.version + " runs in slot " + a.slot + ", verified, in traffic",
          {}});
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
