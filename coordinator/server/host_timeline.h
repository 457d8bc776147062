// Per host of a rollout, when each step of its orders began: the phases its agent reported
// (Progress, PROTOCOL.md §4.8) and the result of each order, for `gantry rollout show` and
// /status, so an operator can line up user errors with swaps. Bounded per host.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/clock.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

// At most this many entries per host per rollout; later ones are dropped. An update with every
// traffic step and its revert take about 20.
inline constexpr size_t kTimelineMax = 32;

struct TimelineEntry {
  const char* phase;  // one of timeline_phase()'s names (static storage)
  Millis at_ms;       // when it began by the agent's clock; the receive time when the agent gave none
  Millis received_ms;
};

// A rollout's timelines by host id.
using HostTimelines = std::unordered_map<std::string, std::vector<TimelineEntry>>;

// The stored name of a timeline phase: a Progress phase, or an order's result ("healthy" |
// "failed"); nullptr for anything else.
const char* timeline_phase(std::string_view name);

// The result entry's phase for a report's outcome: "healthy" for succeeded, else "failed".
const char* result_phase(std::string_view outcome);

// Rows read from the store, by host (rows with an unknown phase are skipped).
HostTimelines timelines_from_rows(const std::vector<store::TimelineRow>& rows);

// [{phase, at_ms, received_ms}, ...] in the order received.
nlohmann::json timeline_json(const std::vector<TimelineEntry>& entries);

}  // namespace gantry::coordinator
