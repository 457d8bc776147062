#include "coordinator/server/rollout_views.h"

#include <set>

#include "coordinator/rollout/plan_view.h"

namespace gantry::coordinator {

Expected<nlohmann::json> rollout_view(store::Store& store, const store::RolloutRow& row, const rollout::State& st,
                                      bool with_events, int64_t events_after, bool with_hosts,
                                      const HostTimelines* timelines) {
  auto c = rollout::count(st);
  nlohmann::json hosts = nlohmann::json::array();
  for (const auto& h : st.hosts) {
    if (!with_hosts) break;
    hosts.push_back({{"host_id", h.host_id},
                     {"state", rollout::host_state_name(h.state)},
                     {"batch", h.batch},
                     {"domain", h.domain},
                     {"from_version", h.from_version},
                     {"order_id", h.order_id},
                     {"message", h.message}});
    if (timelines) {
      auto tl = timelines->find(h.host_id);
      hosts.back()["timeline"] = tl == timelines->end() ? nlohmann::json::array() : timeline_json(tl->second);
    }
  }
  nlohmann::json batches = nlohmann::json::array();
  for (const auto& b : st.batches) {
    if (!with_hosts) break;
    batches.push_back(b);
  }
  nlohmann::json j = {{"id", row.id},
                      {"service", row.service},
                      {"version", row.version},
                      {"kind", row.kind},
                      {"phase", st.hosts.empty() && !row.phase.empty() ? row.phase : rollout::phase_name(st.phase)},
                      {"waiting_promote", st.waiting_promote},
                      {"created_by", row.created_by},
                      {"reason", row.reason},
                      {"created_at", row.created_at},
                      {"finished_at", row.finished_at},
                      {"revision", row.revision},
                      {"batch", st.current_batch + 1},
                      {"batches_total", st.batches.size()},
                      {"batches", batches},
                      {"end_reason", st.end_reason},
                      {"plan", st.plan.to_json()},
                      {"counts",
                       {{"total", st.hosts.size()},
                        {"pending", c.pending},
                        {"ordered", c.ordered},
                        {"healthy", c.healthy},
                        {"failed", c.failed},
                        {"unknown", c.unknown},
                        {"rolling_back", c.rolling_back},
                        {"rolled_back", c.rolled_back},
                        {"rollback_failed", c.rollback_failed},
                        {"skipped", c.skipped}}},
                      {"hosts", hosts}};
  if (st.plan.analysis.enabled()) j["analysis"] = st.analysis.to_json(&st.plan.analysis);
  if (!with_hosts) {
    j.erase("hosts");
    j.erase("batches");
  }
  if (with_events) {
    nlohmann::json evs = nlohmann::json::array();
    auto e = store.events(row.id, events_after, 10000);
    if (!e) return e.error();
    for (const auto& ev : *e) evs.push_back({{"id", ev.id}, {"at", ev.at}, {"message", ev.message}});
    j["events"] = evs;
  }
  return j;
}

Expected<nlohmann::json> rollout_view_by_id(store::Store& store, const RolloutExecutor& exec, uint64_t id,
                                            bool with_events, int64_t events_after, bool with_hosts) {
  if (const auto* a = exec.find(id))
    return rollout_view(store, a->row, a->state, with_events, events_after, with_hosts, &a->timeline);
  auto row = store.rollout(id);
  if (!row) return row.error();
  if (!row->has_value()) return make_error("not_found", "no rollout " + std::to_string(id));
  auto st = rollout::State::from_json((*row)->state);
  HostTimelines timelines;
  if (with_hosts) {
    auto rows = store.timeline(id);
    if (!rows) return rows.error();
    timelines = timelines_from_rows(*rows);
  }
  return rollout_view(store, **row, st ? *st : rollout::State{}, with_events, events_after, with_hosts,
                      with_hosts ? &timelines : nullptr);
}

Expected<nlohmann::json> latest_rollouts_view(store::Store& store, const RolloutExecutor* exec,
                                              const std::string& service, bool with_timelines) {
  nlohmann::json rollouts = nlohmann::json::array();
  std::set<std::string> seen;
  auto rows = store.latest_rollouts(service, 200, /*with_hosts=*/false);
  if (!rows) return rows.error();
  for (const auto& row : *rows) {
    if (seen.count(row.service)) continue;
    seen.insert(row.service);
    Expected<nlohmann::json> view = nlohmann::json();
    const auto* a = exec ? exec->find(row.id) : nullptr;
    const rollout::State* ended = exec ? exec->ended(row.service) : nullptr;
    if (a) {
      view = rollout_view(store, a->row, a->state, false, 0, true, with_timelines ? &a->timeline : nullptr);
    } else if (ended && ended->id == row.id) {
      view = rollout_view(store, row, *ended, false);  // ended in this process: in memory
    } else {
      auto full = store.rollout(row.id);  // with its host slots
      if (!full) return full.error();
      auto st = full->has_value() ? rollout::State::from_json((*full)->state) : rollout::State::from_json(row.state);
      view = rollout_view(store, row, st ? *st : rollout::State{}, false);
    }
    if (!view) return view.error();
    rollouts.push_back(std::move(*view));
    // The last few events, for the status page and `gantry status --json` (the full log: rollout.get).
    nlohmann::json evs = nlohmann::json::array();
    auto e = store.recent_events(row.id, 10);
    if (!e) return e.error();
    for (const auto& ev : *e) evs.push_back({{"id", ev.id}, {"at", ev.at}, {"message", ev.message}});
    rollouts.back()["recent_events"] = std::move(evs);
  }
  return rollouts;
}

Expected<nlohmann::json> status_view(store::Store& store, const RolloutExecutor& exec, const fleet::Registry& registry,
                                     uint64_t epoch, Millis wall_now, const std::string& service, bool with_timelines) {
  auto rollouts = latest_rollouts_view(store, &exec, service, with_timelines);
  if (!rollouts) return rollouts.error();
  return nlohmann::json{{"rollouts", std::move(*rollouts)}, {"hosts", registry.to_json(wall_now)}, {"epoch", epoch}};
}

}  // namespace gantry::coordinator

namespace gantry::coordinator {

Expected<nlohmann::json> history_view(store::Store& store, const std::string& service, int limit) {
  auto rows = store.rollouts(service, false, limit, /*with_hosts=*/false);
  if (!rows) return rows.error();
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : *rows) {
    std::string end_reason = r.state.is_object() ? r.state.value("end_reason", std::string()) : std::string();
    out.push_back(
        {{"id", r.id},
         {"service", r.service},
         {"version", r.version},
         {"kind", r.kind},
         {"phase", r.phase},
         {"revision", r.revision},
         {"created_by", r.created_by},
         {"reason", r.reason},
         {"created_at", r.created_at},
         {"finished_at", r.finished_at},
         {"end_reason", end_reason},
         {"plan", r.state.is_object() && r.state.contains("plan") ? rollout::plan_with_query_names(r.state["plan"])
                                                                  : nlohmann::json()}});
  }
  return nlohmann::json{{"rollouts", out}};
}

}  // namespace gantry::coordinator
