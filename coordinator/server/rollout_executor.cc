#include "coordinator/server/rollout_executor.h"

#include "coordinator/server/desired_state.h"

#include <sysexits.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>

#include "common/util/log.h"
#include "coordinator/rollout/json_text.h"
#include "coordinator/rollout/planner.h"

namespace gantry::coordinator {

namespace {

// Looked up once: log::get takes a lock and a registry lookup, and these run per report.
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
spdlog::logger* LR() {
  static const auto l = log::get("rollout");
  return l.get();
}

}  // namespace

// Keys in sorted order (the text nlohmann::json would dump), written without building a tree
// (one per ordered host).
std::string order_body(const proto::Order& o) {
  std::string out;
  out.reserve(256 + o.manifest.size() + o.signature.size());
  rollout::json_text::Object j(out);
  j.unum("healthy_deadline_ms", o.healthy_deadline_ms)
      .str("kind", o.kind)
      .str("manifest", o.manifest)
      .unum("min_healthy_ms", o.min_healthy_ms)
      .str("order_id", o.order_id)
      .unum("rollout_id", o.rollout_id)
      .str("service", o.service)
      .str("sha256", o.sha256)
      .str("signature", o.signature)
      .unum("size", o.size)
      .str("version", o.version)
      .close();
  return out;
}

Expected<proto::Order> order_from_json(const std::string& body) {
  try {
    const auto j = nlohmann::json::parse(body);
    proto::Order o;
    o.order_id = j.at("order_id").get<std::string>();
    o.rollout_id = j.at("rollout_id").get<uint64_t>();
    o.service = j.at("service").get<std::string>();
    o.kind = j.at("kind").get<std::string>();
    o.version = j.at("version").get<std::string>();
    o.sha256 = j.at("sha256").get<std::string>();
    o.size = j.at("size").get<uint64_t>();
    o.min_healthy_ms = j.value("min_healthy_ms", 0u);
    o.healthy_deadline_ms = j.value("healthy_deadline_ms", 0u);
    o.manifest = j.value("manifest", std::string());
    o.signature = j.value("signature", std::string());
    return o;
  } catch (const std::exception& e) {
    return make_error("store", e.what());
  }
}

RolloutExecutor::RolloutExecutor(store::Store& store, const Clock& clock, OrderSink& orders, SignalSink& signals,
                                 Metrics& metrics, ChangeFlag& changed)
    : store_(store),
      clock_(clock),
      decisions_(clock),
      order_sink_(orders),
      signal_sink_(signals),
      metrics_(metrics),
      changed_(changed) {}

Status RolloutExecutor::restore() {
  auto rows = store_.rollouts("", true, 1000);
  if (!rows) return rows.error();
  for (auto& row : *rows) {
    if (row.state.is_object() && row.state.empty()) {
      // Killed between creating the row and persisting its first step: nothing was ordered.
      L()->warn("rollout {} never started (the coordinator stopped first); marking it failed", row.id);
      store::StepWrite w;
      w.rollout_id = row.id;
      w.phase = "failed";
      w.state = nlohmann::json::object();
      w.finished_at = clock_.wall_ms();
      w.events.push_back(
          {0, row.id, w.finished_at, "could not start: the coordinator stopped before the first step was saved"});
      if (auto s = store_.save_step(w); !s.ok()) return s;
      continue;
    }
    auto state = rollout::State::from_json(row.state);
    if (!state) return make_error("store", "rollout " + std::to_string(row.id) + ": " + state.error().message);
    L()->info("resuming rollout {} of {} to {} (phase {})", row.id, row.service, row.version, row.phase);
    Millis deadline = rollout::next_deadline(*state);
    auto timeline = store_.timeline(row.id);
    if (!timeline) return make_error("store", "rollout " + std::to_string(row.id) + ": " + timeline.error().message);
    active_[row.id] = ActiveRollout{row, std::move(*state), deadline, timelines_from_rows(*timeline)};
  }
  auto desired = store_.desired();
  if (!desired) return desired.error();
  for (auto& d : *desired) desired_[d.service] = std::move(d);
  // Decision time carries on from the latest time the active rollouts recorded (the wall clock
  // may have been stepped back while the coordinator was down).
  Millis floor = 0;
  for (const auto& [id, a] : active_) {
    floor = std::max(floor, a.state.started_at);
    for (const auto& h : a.state.hosts) floor = std::max({floor, h.ordered_at, h.lost_at});
  }
  decisions_.resume_from(floor);
  auto orders = store_.open_orders();
  if (!orders) return orders.error();
  for (auto& o : *orders) {
    // Only orders of active rollouts are live; an ended rollout's order must never be re-sent.
    if (!active_.count(o.rollout_id)) {
      if (auto s = store_.close_orders(o.rollout_id); !s.ok()) return s;
      continue;
    }
    OpenOrder open{o, std::nullopt, 0};
    if (auto wire = order_from_json(o.body))
      open.wire = std::move(*wire);
    else
      L()->error("order {} is corrupt in the store: {}", o.order_id, wire.error().message);
    orders_[o.order_id] = std::move(open);
  }
  return Status::Ok();
}

const RolloutExecutor::ActiveRollout* RolloutExecutor::find(uint64_t id) const {
  auto it = active_.find(id);
  return it == active_.end() ? nullptr : &it->second;
}

bool RolloutExecutor::busy(const std::string& service) const {
  for (const auto& [id, a] : active_)
    if (a.state.service == service) return true;
  return false;
}

const rollout::State* RolloutExecutor::ended(const std::string& service) const {
  auto it = ended_.find(service);
  return it == ended_.end() ? nullptr : it->second.get();
}

Millis RolloutExecutor::next_deadline() const {
  Millis t = 0;
  for (const auto& [id, a] : active_)
    if (a.deadline > 0 && (t == 0 || a.deadline < t)) t = a.deadline;
  return t;
}

void RolloutExecutor::send(OpenOrder& o) {
  if (!o.wire) {  // its stored body did not parse when it was loaded
    L()->error("order {} is corrupt in the store; not sent", o.row.order_id);
    return;
  }
  if (!order_sink_.send_order(o.row.host_id, *o.wire)) return;
  if (o.last_sent != 0) metrics_.orders_retried++;
  metrics_.orders_sent++;
  o.last_sent = clock_.now_ms();
}

// ---- stepping -----------------------------------------------------------------

Status RolloutExecutor::apply(uint64_t id, const rollout::Event& ev, const store::ResultRow* result) {
  std::vector<Status> errors;
  std::vector<store::ResultRow> results;
  if (result) results.push_back(*result);
  Status s = apply_many(id, {ev}, std::move(results), &errors);
  if (!s.ok()) return s;
  return errors.empty() ? Status::Ok() : errors[0];
}

Status RolloutExecutor::apply_many(uint64_t id, const std::vector<rollout::Event>& evs,
                                   std::vector<store::ResultRow> results, std::vector<Status>* errors,
                                   bool agent_reports) {
  auto it = active_.find(id);
  if (it == active_.end()) return make_error("not_found", "rollout " + std::to_string(id) + " is not active");
  ActiveRollout& a = it->second;
  Millis wall = clock_.wall_ms();
  std::vector<Status> errs;
  // The live state is moved through the machine, not copied; if the step cannot be saved, the
  // state goes back to what the store holds (restore_saved_state).
  rollout::StepResult r = rollout::step_all(std::move(a.state), evs, decisions_.now(), &errs);
  if (errors) *errors = errs;
  bool any_ok = std::any_of(errs.begin(), errs.end(), [](const Status& e) { return e.ok(); });
  if (!any_ok) {  // every event refused: the state is as it was, nothing written
    a.state = std::move(r.state);
    return errs.empty() ? Status::Ok() : errs.front();
  }

  store::StepWrite w;
  w.results = std::move(results);
  if (auto tl = pending_timeline_.find(id); tl != pending_timeline_.end()) {
    w.timeline = std::move(tl->second);
    pending_timeline_.erase(tl);
  }
  // Acknowledgements are not carried here: most orders are reported within moments of their
  // ack, and a reported order is written acked with its result. The ones still open are
  // persisted once per heartbeat interval (flush_acks).
  w.rollout_id = id;
  w.phase = rollout::phase_name(r.state.phase);
  // Only the header and the slots this step touched: O(changed hosts) per step.
  w.state = r.state.header_json();
  w.slots.reserve(r.touched.size());
  for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
  std::vector<proto::Order> new_wires;
  std::vector<rollout::SignalKind> broadcasts;
  std::vector<rollout::Event> follow_ups;
  std::map<std::string, Expected<std::optional<store::ReleaseRow>>> releases;
  for (const auto& act : r.actions) {
    if (auto* o = std::get_if<rollout::ActOrder>(&act)) {
      // One lookup per version per step, not one per ordered host.
      auto cached = releases.find(o->version);
      if (cached == releases.end()) {
        const auto key = std::make_pair(r.state.service, o->version);
        auto known = orderable_releases_.find(key);
        if (known != orderable_releases_.end()) {
          cached = releases.emplace(o->version, std::optional<store::ReleaseRow>(known->second)).first;
        } else {
          cached = releases.emplace(o->version, store_.release(r.state.service, o->version)).first;
          if (cached->second && cached->second->has_value()) {
            if (orderable_releases_.size() >= 256) orderable_releases_.clear();
            orderable_releases_.emplace(key, **cached->second);
          }
        }
      }
      const auto& rel = cached->second;
      if (!rel || !rel->has_value()) {
        std::string why = "release " + o->version + " of " + r.state.service + " is not known to the coordinator";
        if (!rel) why = "release " + o->version + " of " + r.state.service + " cannot be read: " + rel.error().message;
        w.events.push_back(
            {0, id, wall, o->host_id + ": cannot order " + rollout::order_kind_name(o->kind) + ": " + why});
        follow_ups.push_back(rollout::EvReport{o->host_id, o->order_id, rollout::Outcome::kFailed, "", why});
        continue;
      }
      proto::Order po;
      po.order_id = o->order_id;
      po.rollout_id = id;
      po.service = r.state.service;
      po.kind = rollout::order_kind_name(o->kind);
      po.version = o->version;
      po.sha256 = (*rel)->sha256;
      po.size = (*rel)->size;
      po.manifest = (*rel)->manifest;  // agents check these; the coordinator only carries them
      po.signature = (*rel)->signature;
      // The wire caps both at 24 h (see PROTOCOL.md); the plan validator enforces the same.
      constexpr Millis kMaxWire = 24LL * 3600 * 1000;
      po.min_healthy_ms = static_cast<uint32_t>(std::clamp<Millis>(r.state.plan.min_healthy_ms, 0, kMaxWire));
      po.healthy_deadline_ms = static_cast<uint32_t>(std::clamp<Millis>(r.state.plan.healthy_deadline_ms, 0, kMaxWire));
      store::OrderRow row;
      row.order_id = o->order_id;
      row.rollout_id = id;
      row.host_id = o->host_id;
      row.body = order_body(po);
      row.created_at = wall;
      w.new_orders.push_back(std::move(row));
      new_wires.push_back(std::move(po));
    } else if (auto* b = std::get_if<rollout::ActBroadcast>(&act)) {
      broadcasts.push_back(b->kind);
    } else if (auto* rec = std::get_if<rollout::ActRecord>(&act)) {
      w.events.push_back({0, id, wall, rec->message});
    } else if (auto* f = std::get_if<rollout::ActFinished>(&act)) {
      w.finished_at = wall;
      w.assign_revision = f->phase == rollout::Phase::kSucceeded;
      // The service's desired state changes with the end, in the same commit.
      auto before = desired_.find(r.state.service);
      w.desired = desired_after(r.state, a.row.kind,
                                before == desired_.end() ? std::nullopt : std::optional(before->second), wall);
      if (w.desired)
        w.events.push_back({0, id, wall,
                            "desired state of " + r.state.service + ": " + w.desired->version +
                                (w.desired->held ? " (held)" : "") + " — " + w.desired->note});
    }
  }
  // The operator command that caused this step: its audit row and the events it asked for are
  // committed with the decision, not in a durable commit of their own after it.
  const bool carries_command = command_ && !command_->written;
  if (carries_command) {
    w.events.insert(w.events.begin(), command_->events.begin(), command_->events.end());
    w.audit.push_back(command_->audit);
  }
  // Persist first; only what is on disk is acted on. Reports that lead to no act need no fsync
  // of their own (see StepWrite::durable): one fsync per batch transition, not one per pass.
  w.durable = !agent_reports || !w.new_orders.empty() || !broadcasts.empty() || w.finished_at > 0 ||
              !follow_ups.empty() || carries_command;
  if (auto s = store_.save_step(w); !s.ok()) {
    L()->critical("rollout {}: cannot persist step, not acting on it: {}", id, s.error().message);
    if (!w.timeline.empty()) {  // tried again with the next write
      auto& back = pending_timeline_[id];
      back.insert(back.begin(), w.timeline.begin(), w.timeline.end());
    }
    a.state = std::move(r.state);
    restore_saved_state(a);
    return s;
  }
  if (carries_command) command_->written = true;
  if (w.desired) desired_[w.desired->service] = *w.desired;
  for (const auto& e : w.events) LR()->info("rollout {}: {}", id, e.message);
  a.state = std::move(r.state);
  a.deadline = r.deadline;  // next_deadline(a.state), from the hosts with a deadline only
  a.row.phase = w.phase;
  changed_.mark();
  for (size_t i = 0; i < w.new_orders.size(); ++i) {
    auto& o = orders_[w.new_orders[i].order_id];
    o.row = std::move(w.new_orders[i]);
    o.wire = std::move(new_wires[i]);
    o.last_sent = 0;
    send(o);
  }
  for (const auto& kind : broadcasts) {
    auto s = signal_sink_.broadcast(kind, id, a.state.service);
    if (!s.ok())
      L()->warn("broadcast {} failed: {} (hosts still get their own orders)", rollout::signal_kind_name(kind),
                s.error().message);
  }
  if (rollout::is_terminal(a.state.phase)) {
    // An ended rollout orders nothing more: a host that comes back later must not receive
    // a stale update (level-triggered reconciliation is by the next rollout, not by resends).
    // Its open order rows were closed by the step that ended it (StepWrite::finished_at).
    for (auto oi = orders_.begin(); oi != orders_.end();) {
      if (oi->second.row.rollout_id == id)
        oi = orders_.erase(oi);
      else
        ++oi;
    }
    metrics_.rollouts_ended[w.phase]++;
    LR()->info("rollout {} of {} to {} ended: {}{}{}", id, a.state.service, a.state.version, w.phase,
               a.state.end_reason.empty() ? "" : " — ", a.state.end_reason);
    // The key is copied first: in `m[k] = f(std::move(s))` the right side runs first.
    std::string service = a.state.service;
    ended_[service] = std::make_shared<const rollout::State>(std::move(a.state));
    active_.erase(it);
  }
  // Follow-ups (an order that could not be built fails its host) are steps of their own; the
  // first that cannot be saved is this call's error: the caller sees it, the state is as saved.
  for (const auto& ev2 : follow_ups) {
    if (!active_.count(id)) break;
    if (auto s = apply(id, ev2); !s.ok() && s.error().code != "state") return s;
  }
  return Status::Ok();
}

void RolloutExecutor::restore_saved_state(ActiveRollout& a) {
  const uint64_t id = a.row.id;
  auto row = store_.rollout(id);
  if (row && row->has_value() && (*row)->state.is_object() && (*row)->state.empty()) {
    rollout::State never_started;  // its first step (the start) is what failed
    never_started.id = id;
    never_started.service = a.row.service;
    never_started.version = a.row.version;
    a.state = std::move(never_started);
    a.deadline = 0;
    return;
  }
  if (row && row->has_value()) {
    if (auto st = rollout::State::from_json((*row)->state)) {
      a.state = std::move(*st);
      a.deadline = rollout::next_deadline(a.state);
      return;
    }
  }
  // Neither the step nor the last saved state: nothing consistent is left in memory. Crash-only:
  // exit, and systemd starts a coordinator that resumes from the store (docs/GUARANTEES.md, 3).
  // The shared store out of reach (quorum lost, or cut off from it) is a temporary condition,
  // the one a leader that lost its lease exits for: EX_TEMPFAIL, as that leader does
  // (docs/HIGH_AVAILABILITY.md); a store that answered but cannot be read is EX_SOFTWARE.
  const bool unreachable = !row && store_.out_of_reach(row.error());
  L()->critical(
      "rollout {}: cannot read its saved state back either ({}); exiting so that a restart resumes from the store", id,
      row ? "unparsable" : row.error().message);
  L()->flush();
  std::_Exit(unreachable ? EX_TEMPFAIL : EX_SOFTWARE);
}

Expected<uint64_t> RolloutExecutor::start(StartRequest req) {
  for (const auto& [id, a] : active_) {
    if (a.state.service == req.service) {
      return make_error("busy", "rollout " + std::to_string(id) + " of " + req.service + " is still " + a.row.phase +
                                    "; abort it or wait for it to end before starting another");
    }
  }
  // The request's own mistakes first (a bad plan is bad whatever the fleet holds), then the state.
  auto plan = rollout::Plan::from_json(req.plan.is_null() ? nlohmann::json::object() : req.plan);
  if (!plan) return make_error("plan", "bad plan: " + plan.error().message);
  auto rel = store_.release(req.service, req.version);
  if (!rel) return rel.error();
  if (!rel->has_value())
    return make_error("not_found", "release " + req.version + " of " + req.service + " has not been uploaded");
  if (req.hosts.empty())
    return make_error("no_hosts", "no host runs service " + req.service +
                                      (req.selector.empty() ? "" : " and matches " + req.selector));
  auto sched = rollout::make_schedule(*plan, req.hosts);
  if (!sched) return make_error("plan", "cannot plan: " + sched.error().message);

  store::RolloutRow row;
  row.service = req.service;
  row.version = req.version;
  row.kind = req.kind;
  row.phase = "running";
  row.created_by = req.who;
  row.reason = req.reason;
  row.created_at = clock_.wall_ms();
  row.state = nlohmann::json::object();
  auto id = store_.create_rollout(row);
  if (!id) return id.error();
  row.id = *id;
  rollout::State empty;
  empty.id = *id;
  empty.service = req.service;
  empty.version = req.version;
  active_[*id] = ActiveRollout{row, empty, 0, {}};
  ended_.erase(req.service);
  // The start event is moved in, not copied (10,000 candidates with their labels).
  std::vector<rollout::Event> start_ev;
  start_ev.emplace_back(rollout::EvStart{*id, req.service, req.version, *plan, std::move(req.hosts), req.selector});
  std::vector<Status> start_errors;
  auto s = apply_many(*id, start_ev, {}, &start_errors);
  if (s.ok() && !start_errors.empty()) s = start_errors.front();
  if (!s.ok()) {
    active_.erase(*id);
    store::StepWrite w;
    w.rollout_id = *id;
    w.phase = "failed";
    w.state = nlohmann::json::object();
    w.finished_at = clock_.wall_ms();
    w.events.push_back({0, *id, w.finished_at, "could not start: " + s.error().message});
    std::string msg = "could not start: " + s.error().message;
    // Not saved either: restore() finds the row without a first step and marks it failed then.
    if (auto saved = store_.save_step(w); !saved.ok())
      msg += " (and it could not be marked failed: " + saved.error().message + ")";
    return make_error(s.error().code, msg);
  }
  return *id;
}

// ---- agent events ---------------------------------------------------------------

bool RolloutExecutor::queue_report(const std::string& host_id, const proto::Report& r) {
  auto it = orders_.find(r.order_id);
  if (it == orders_.end() || it->second.row.host_id != host_id || pending_report_ids_.count(r.order_id)) return false;
  // The codec admits only the three outcomes; anything else is not applied.
  const auto outcome = rollout::parse_outcome(r.outcome);
  if (!outcome) {
    L()->warn("{} reported order {} with unknown outcome; ignored", host_id, r.order_id);
    return false;
  }
  store::ResultRow row;
  row.rollout_id = r.rollout_id;
  row.host_id = host_id;
  row.order_id = r.order_id;
  row.outcome = r.outcome;
  row.running_version = r.running_version;
  row.message = r.message;
  row.timings = r.timings_ms;
  row.at = clock_.wall_ms();
  uint64_t rid = it->second.row.rollout_id;
  if (auto a = active_.find(rid); a != active_.end())
    add_timeline(a->second, host_id, result_phase(r.outcome), row.at, row.at);
  // The report is recorded in the same transaction as the step that applies it: a crash in
  // between would otherwise close the order (never re-sent) with the rollout still waiting.
  // Reports read in one pass share that transaction (flush_reports): one fsync per pass.
  pending_report_ids_.insert(r.order_id);
  pending_reports_.push_back({rid, rollout::EvReport{host_id, r.order_id, *outcome, r.running_version, r.message},
                              std::move(row),
                              fmt::format("{} reports order {}: {} (running {}){}{}", host_id, r.order_id, r.outcome,
                                          r.running_version.empty() ? "nothing" : r.running_version,
                                          r.message.empty() ? "" : ": ", r.message)});
  return true;
}

std::string RolloutExecutor::open_order_service(const std::string& order_id, const std::string& host_id) const {
  auto it = orders_.find(order_id);
  if (it == orders_.end() || it->second.row.host_id != host_id || !it->second.wire) return {};
  return it->second.wire->service;
}

void RolloutExecutor::progress(const std::string& host_id, const proto::Progress& p) {
  auto it = orders_.find(p.order_id);
  if (it == orders_.end() || it->second.row.host_id != host_id) return;
  auto a = active_.find(it->second.row.rollout_id);
  if (a == active_.end()) return;
  // The codec admits only the known phases; the table is the same list.
  const char* phase = timeline_phase(p.phase);
  if (!phase) return;
  const Millis received = clock_.wall_ms();
  // at_ms is the agent's clock: any uint64. Beyond Millis (or absent): the receive time.
  const Millis at =
      p.at_ms > 0 && p.at_ms <= static_cast<uint64_t>(INT64_MAX) ? static_cast<Millis>(p.at_ms) : received;
  add_timeline(a->second, host_id, phase, at, received);
}

void RolloutExecutor::add_timeline(ActiveRollout& a, const std::string& host_id, const char* phase, Millis at_ms,
                                   Millis received_ms) {
  auto& entries = a.timeline[host_id];
  // An agent re-sends what it held while disconnected: the same phase at the same time once.
  if (!entries.empty() && entries.back().phase == phase && entries.back().at_ms == at_ms) return;
  if (entries.size() >= kTimelineMax) return;
  entries.push_back({phase, at_ms, received_ms});
  pending_timeline_[a.row.id].push_back(
      {a.row.id, host_id, static_cast<uint32_t>(entries.size() - 1), phase, at_ms, received_ms});
}

void RolloutExecutor::host_back(const proto::Hello& h, bool was_offline) {
  // Level-triggered: tell each rollout the host is back with what it runs (applied with the
  // other agent events of this pass, in arrival order: flush_reports), then resend every open
  // order for it (the agent de-duplicates and answers with the result it has).
  for (auto& [id, a] : active_) {
    if (!a.state.find(h.host_id)) continue;
    std::string running, in_progress;
    for (const auto& s : h.services)
      if (s.name == a.state.service) {
        running = s.current_version;
        in_progress = s.order_id;
      }
    pending_reports_.push_back({id, rollout::EvHostBack{h.host_id, running, in_progress}, std::nullopt, {}});
  }
  for (auto& [oid, o] : orders_) {
    if (o.row.host_id == h.host_id && may_send(o)) send(o);
  }
  if (was_offline) note_back_after_end(h);
}

// A host back after the last rollout of a service ended without it (it was unknown or still in
// flight): the registry already says what it runs (from the hello); the ended rollout's log gets
// the same truth, and a warning if that differs from where the rollout left it. Nothing is
// ordered here: an ended rollout orders nothing more; the service's desired state does
// (Convergence repairs the drift, or reports it; see docs/GUARANTEES.md).
void RolloutExecutor::note_back_after_end(const proto::Hello& h) {
  for (const auto& s : h.services) {
    bool active = false;
    for (const auto& [id, a] : active_) active = active || a.state.service == s.name;
    if (active) continue;
    // Once per service per process from the store (a 10,000-host state), then from memory:
    // after a coordinator restart every host says hello "again".
    auto cached = ended_.find(s.name);
    if (cached == ended_.end()) {
      std::shared_ptr<const rollout::State> loaded;
      auto rows = store_.rollouts(s.name, false, 1);
      if (!rows) {
        L()->error("cannot read the last rollout of {} to note {} back: {}", s.name, h.host_id, rows.error().message);
        continue;  // not cached: the next host back tries again
      }
      if (!rows->empty()) {
        if (auto st = rollout::State::from_json(rows->front().state))
          loaded = std::make_shared<const rollout::State>(std::move(*st));
      }
      cached = ended_.emplace(s.name, loaded).first;
    }
    if (!cached->second) continue;
    const rollout::State* st = cached->second.get();
    const uint64_t rollout_id = st->id;
    const rollout::HostSlot* slot = st->find(h.host_id);
    if (!slot) continue;
    using HS = rollout::HostState;
    if (slot->state != HS::kUnknown && slot->state != HS::kOrdered && slot->state != HS::kRollingBack) continue;
    // Where the rollout meant to leave this host: the target if it ended succeeded, else the
    // release it had before (rolled back, failed, aborted: the fleet stays on the old one).
    const std::string wanted = st->phase == rollout::Phase::kSucceeded ? st->version : slot->from_version;
    std::string msg = h.host_id + " is back after the rollout ended (" + rollout::host_state_name(slot->state) +
                      "); it runs " + (s.current_version.empty() ? "nothing" : s.current_version);
    if (s.current_version != wanted) {
      msg += ", not " + (wanted.empty() ? "nothing" : wanted) +
             " where the rollout left the fleet; the service's desired state decides what it gets";
      L()->warn("rollout {}: {}", rollout_id, msg);
    }
    if (auto w = store_.add_event({0, rollout_id, clock_.wall_ms(), msg}); !w.ok())
      L()->error("rollout {}: cannot record that {} is back: {}", rollout_id, h.host_id, w.error().message);
  }
}

void RolloutExecutor::flush_reports() {
  apply_reports();
  if (pending_timeline_.empty()) return;
  // No step of their rollout carried them in this pass: one lazy transaction for all.
  std::vector<store::TimelineRow> rows;
  for (auto& [rid, v] : pending_timeline_) std::move(v.begin(), v.end(), std::back_inserter(rows));
  pending_timeline_.clear();
  if (auto s = store_.add_timeline(rows); !s.ok())
    L()->error("cannot record {} timeline entr{}: {}", rows.size(), rows.size() == 1 ? "y" : "ies", s.error().message);
}

void RolloutExecutor::apply_reports() {
  if (pending_reports_.empty()) return;
  std::vector<PendingReport> batch;
  batch.swap(pending_reports_);
  const int64_t t0 = steady_us();
  pending_report_ids_.clear();
  // One step per rollout, events in arrival order.
  std::map<uint64_t, std::vector<size_t>> by_rollout;
  for (size_t i = 0; i < batch.size(); ++i) by_rollout[batch[i].rollout_id].push_back(i);
  for (auto& [rid, idx] : by_rollout) {
    std::vector<store::ResultRow> rows;
    std::vector<rollout::Event> evs;
    for (size_t i : idx)
      if (batch[i].row) rows.push_back(*batch[i].row);
    Status saved = Status::Ok();
    const bool applied = active_.count(rid) > 0;
    if (applied) {
      for (size_t i : idx) evs.push_back(batch[i].event);
      saved = apply_many(rid, evs, std::move(rows), nullptr, /*agent_reports=*/true);
      // A step error that is not a store error (every event refused) still recorded nothing.
    } else {
      for (const auto& row : rows) {
        if (auto s = store_.record_report(row); !s.ok()) saved = s;
      }
    }
    for (size_t i : idx) {
      const auto& p = batch[i];
      if (!p.row) {  // a host back: the step's own event line says it
        if (!saved.ok())
          L()->error("cannot record that {} is back: {}", std::get<rollout::EvHostBack>(p.event).host_id,
                     saved.error().message);
        continue;
      }
      if (!saved.ok()) {
        L()->error("cannot record report of {} for order {}: {}; it will be resent", p.row->host_id, p.row->order_id,
                   saved.error().message);
        continue;
      }
      orders_.erase(p.row->order_id);
      // Applied to an active rollout, the rollout's own event line ("<host> healthy on v2",
      // "<host> failed: ...") already says it at info: one line per report, not two.
      if (applied)
        L()->debug("{}", p.log_line);
      else
        L()->info("{}", p.log_line);
    }
  }
  L()->debug("group commit: {} report(s) in {} us", batch.size(), steady_us() - t0);
}

void RolloutExecutor::ack(const std::string& host_id, const std::string& order_id) {
  auto it = orders_.find(order_id);
  if (it == orders_.end() || it->second.row.host_id != host_id) return;
  if (it->second.row.acked) return;
  it->second.row.acked = true;
  metrics_.orders_acked++;
  pending_acks_.push_back(order_id);
}

Status RolloutExecutor::flush_acks() {
  if (pending_acks_.empty()) return Status::Ok();
  std::vector<std::string> acks;
  for (auto& id : pending_acks_) {
    if (orders_.count(id)) acks.push_back(std::move(id));  // a reported one was written acked
  }
  pending_acks_.clear();
  // A lost ack only means one more resend after a restart, which the agent answers as a duplicate.
  return store_.mark_acked(acks);
}

bool RolloutExecutor::may_send(const OpenOrder& o) const {
  auto it = active_.find(o.row.rollout_id);
  if (it == active_.end()) return false;
  const rollout::State& st = it->second.state;
  if (!o.wire || o.wire->kind != "update" || !st.halted) return true;
  // A stopped rollout sends no update order a host has not already taken (acknowledged): one
  // it never received would start the release after the decision to stop.
  const rollout::HostSlot* h = st.find(o.row.host_id);
  return o.row.acked && h && h->order_id == o.row.order_id && h->state == rollout::HostState::kOrdered;
}

void RolloutExecutor::resend_unacked(Millis resend_ms) {
  const Millis now = clock_.now_ms();
  for (auto& [oid, o] : orders_) {
    if (!o.row.acked && (o.last_sent == 0 || now - o.last_sent >= resend_ms) && may_send(o)) send(o);
  }
}

Status RolloutExecutor::hosts_lost(const std::vector<std::string>& host_ids) {
  // The hosts lost at once go to each rollout as one step (one commit), as the reports of a
  // pass do: a stall that expires hundreds of hosts must not add one fsync per host.
  std::map<uint64_t, std::vector<rollout::Event>> lost;
  for (const auto& host_id : host_ids)
    for (auto& [rid, a] : active_)
      if (a.state.find(host_id)) lost[rid].push_back(rollout::EvHostLost{host_id});
  Status first = Status::Ok();
  for (auto& [rid, evs] : lost) {
    // A "state" error is an event that changes nothing now (the host already counted): nothing to record.
    if (auto s = apply_many(rid, evs, {}); !s.ok() && s.error().code != "state" && first.ok()) first = s;
  }
  return first;
}

Status RolloutExecutor::tick(Millis unread_ms) {
  const Millis judged = decisions_.now() - std::max<Millis>(0, unread_ms);
  std::vector<uint64_t> due;
  for (auto& [id, a] : active_) {
    if (a.deadline > 0 && a.deadline <= judged) due.push_back(id);
  }
  Status first = Status::Ok();
  for (auto id : due) {
    if (auto s = apply(id, rollout::EvTick{}); !s.ok() && s.error().code != "state" && first.ok()) first = s;
  }
  return first;
}

// ---- the operator command's record -------------------------------------------

void RolloutExecutor::begin_command(store::AuditRow audit) { command_ = CommandRecord{std::move(audit), {}, false}; }

void RolloutExecutor::add_command_event(store::EventRow e) {
  if (command_) command_->events.push_back(std::move(e));
}

RolloutExecutor::CommandRecord RolloutExecutor::end_command() {
  CommandRecord rec = std::move(*command_);
  command_.reset();
  return rec;
}

}  // namespace gantry::coordinator
