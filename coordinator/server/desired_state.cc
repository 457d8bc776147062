#include "coordinator/server/desired_state.h"

#include <map>

namespace gantry::coordinator {

std::optional<store::DesiredRow> desired_after(const rollout::State& state, const std::string& kind,
                                               const std::optional<store::DesiredRow>& before, Millis wall) {
  if (kind == "converge") return std::nullopt;
  const std::string id = std::to_string(state.id);
  store::DesiredRow d;
  d.service = state.service;
  d.selector = state.selector;
  d.converge = state.plan.converge;
  d.plan = state.plan.to_json();
  d.rollout_id = state.id;
  d.updated_at = wall;
  switch (state.phase) {
    case rollout::Phase::kSucceeded:
      d.version = state.version;
      d.note = (kind == "rollback" ? "rollback " : "rollout ") + id + " to " + state.version + " succeeded";
      return d;
    case rollout::Phase::kRolledBack: {
      if (before && before->version != state.version) {
        d = *before;
        d.held = false;
        d.rollout_id = state.id;
        d.updated_at = wall;
        d.note = "rollout " + id + " to " + state.version + " was rolled back to " + before->version;
        return d;
      }
      // No desired state before this rollout (or it named the target itself): the release most
      // of its hosts ran before it.
      std::map<std::string, size_t> votes;
      for (const auto& h : state.hosts)
        if (!h.from_version.empty() && h.from_version != state.version) ++votes[h.from_version];
      if (votes.empty()) return std::nullopt;
      auto best = votes.begin();
      for (auto it = votes.begin(); it != votes.end(); ++it)
        if (it->second > best->second) best = it;
      d.version = best->first;
      d.note = "rollout " + id + " to " + state.version + " was rolled back to " + d.version;
      return d;
    }
    case rollout::Phase::kFailed:
    case rollout::Phase::kAborted:
      if (!before) return std::nullopt;
      d = *before;
      d.held = true;
      d.updated_at = wall;
      d.note = "rollout " + id + " to " + state.version + " ended " + rollout::phase_name(state.phase) +
               ": the hosts are left as they are; drift is reported, not repaired, until the next rollout or "
               "rollback of " +
               state.service + " ends";
      return d;
    default:
      return std::nullopt;
  }
}

nlohmann::json convergence_plan(const nlohmann::json& desired_plan) {
  nlohmann::json p = desired_plan.is_object() ? desired_plan : nlohmann::json::object();
  p["batches"] = {"1", "100%"};
  p["max_failures"] = "0";
  p["auto_rollback"] = false;
  p["converge"] = "auto";
  for (const char* k : {"max_failures_per_batch", "pause_after", "analysis", "batch_delay"}) p.erase(k);
  return p;
}

}  // namespace gantry::coordinator
