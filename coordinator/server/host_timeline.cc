#include "coordinator/server/host_timeline.h"

#include <array>

namespace gantry::coordinator {

namespace {

// The Progress phases the codec admits (common/protocol/codec.cc), and the two results. Kept as
// one table so that an entry holds a pointer, not a string, at 10,000 hosts x ~10 entries.
constexpr std::array<const char*, 13> kPhases = {
    "fetching",  "staging",          "draining",        "waiting_inflight",  "swapping", "restarting", "verifying",
    "reverting", "allowing_traffic", "traffic_allowed", "verifying_traffic", "healthy",  "failed"};

}  // namespace

const char* timeline_phase(std::string_view name) {
  for (const char* p : kPhases)
    if (name == p) return p;
  return nullptr;
}

const char* result_phase(std::string_view outcome) {
  return timeline_phase(outcome == "succeeded" ? "healthy" : "failed");
}

HostTimelines timelines_from_rows(const std::vector<store::TimelineRow>& rows) {
  HostTimelines out;
  for (const auto& r : rows) {
    const char* phase = timeline_phase(r.phase);
    auto& v = out[r.host_id];
    if (!phase || v.size() >= kTimelineMax) continue;
    v.push_back({phase, r.at_ms, r.received_ms});
  }
  return out;
}

nlohmann::json timeline_json(const std::vector<TimelineEntry>& entries) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& e : entries) a.push_back({{"phase", e.phase}, {"at_ms", e.at_ms}, {"received_ms", e.received_ms}});
  return a;
}

}  // namespace gantry::coordinator
