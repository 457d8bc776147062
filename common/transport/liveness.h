// When an agent gives its connection to the coordinator up: the rule shared by the real agent
// (agent/net/session.cc) and the fleet simulator (bench/agents.cc), PROTOCOL.md §4.
#pragma once

#include <algorithm>
#include <cstdint>

namespace gantry::transport {

// A connection that never heard a word gets up to 2^this times the plain limit.
constexpr int kMaxSilentConnectionDoublings = 3;

// Silence (ms) after which the DEALER is closed and recreated after a backoff.
//  - Welcomed: `misses` x the period the coordinator announced in its Welcome.
//  - Not welcomed yet: `misses` x `period_ms` (the agent's own heartbeat interval until a
//    Welcome says otherwise), doubled for each connection in a row that was given up without
//    hearing a single frame (`silent_in_row`, at most kMaxSilentConnectionDoublings doublings).
//    Such a connection may be a CURVE handshake the coordinator is still working on (after a
//    restart it has thousands queued): throwing it away restarts that work from zero. libzmq
//    reconnects the socket by itself meanwhile, so keeping it costs no reachability. A
//    connection that heard anything (a refusal such as `enrollment_pending` included) had its
//    handshake done: it resets the count, and the plain limit applies.
inline int64_t silence_limit_ms(bool welcomed, int64_t period_ms, uint32_t misses, int silent_in_row) {
  int64_t base = period_ms * static_cast<int64_t>(misses);
  if (welcomed) return base;
  return base << std::clamp(silent_in_row, 0, kMaxSilentConnectionDoublings);
}

}  // namespace gantry::transport
