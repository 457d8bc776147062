// The JSON views of rollouts and of the fleet that operators (`gantry status`, `rollout show`)
// and /status read. The shapes are the operator API's replies (PROTOCOL.md, section 7).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/util/expected.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/rollout/state_machine.h"
#include "coordinator/server/rollout_executor.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

// One rollout. with_hosts false: without the per-host lists ("hosts", "batches"), which at
// 10,000 hosts cost the loop tens of ms to build and send. with_events: its event log (those
// with an id above `events_after`), read from the store. `timelines`: each host's gets a
// "timeline" array (nullptr: none).
Expected<nlohmann::json> rollout_view(store::Store& store, const store::RolloutRow& row, const rollout::State& st,
                                      bool with_events, int64_t events_after = 0, bool with_hosts = true,
                                      const HostTimelines* timelines = nullptr);

// Rollout `id`, active (from memory) or not (from the store); with_hosts: with each host's timeline.
Expected<nlohmann::json> rollout_view_by_id(store::Store& store, const RolloutExecutor& exec, uint64_t id,
                                            bool with_events, int64_t events_after = 0, bool with_hosts = true);

// The rollouts, newest first (at most `limit`; `service` empty: all): who started each, why,
// its result and how it ended, without hosts (`gantry history`, and /rollouts over HTTP).
Expected<nlohmann::json> history_view(store::Store& store, const std::string& service, int limit);

// The newest rollout of each service (or of `service`), with its last events, as an array;
// `exec` null (a standby): every one read from the store.
Expected<nlohmann::json> latest_rollouts_view(store::Store& store, const RolloutExecutor* exec,
                                              const std::string& service, bool with_timelines);

// The newest rollout of each service (or of `service`), with its last events, and every host;
// with `with_timelines`, an active rollout's hosts with their timelines (from memory). The
// operator reply leaves them out: they would nest deeper than the protocol's decode limit
// (PROTOCOL.md §2), and `rollout show` carries them.
Expected<nlohmann::json> status_view(store::Store& store, const RolloutExecutor& exec, const fleet::Registry& registry,
                                     uint64_t epoch, Millis wall_now, const std::string& service = "",
                                     bool with_timelines = false);

}  // namespace gantry::coordinator
