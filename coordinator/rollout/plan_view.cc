#include "coordinator/rollout/plan_view.h"

#include <string>

namespace gantry::rollout {

nlohmann::json plan_with_query_names(const nlohmann::json& plan) {
  nlohmann::json out = plan;
  if (!out.is_object() || !out.contains("analysis") || !out["analysis"].is_object()) return out;
  nlohmann::json& a = out["analysis"];
  if (!a.contains("queries") || !a["queries"].is_array()) return out;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& q : a["queries"]) names.push_back(q.is_object() ? q.value("name", std::string()) : std::string());
  a["queries"] = std::move(names);
  return out;
}

}  // namespace gantry::rollout
