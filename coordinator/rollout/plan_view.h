// A plan's JSON as replies that list many rollouts show it.
#pragma once

#include <nlohmann/json.hpp>

namespace gantry::rollout {

// `plan` (a plan's JSON) with its analysis queries named rather than spelled out: for replies that
// list many rollouts (history), whose plans would otherwise nest deeper than the wire's decode
// limit (PROTOCOL.md §2); `rollout show` has them in full.
nlohmann::json plan_with_query_names(const nlohmann::json& plan);

}  // namespace gantry::rollout
