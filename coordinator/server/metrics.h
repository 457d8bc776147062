// Counters the coordinator keeps and their rendering in the Prometheus text format.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "coordinator/fleet/registry.h"
#include "coordinator/rollout/state_machine.h"

namespace gantry::coordinator {

// A Prometheus histogram over seconds with fixed buckets.
struct Histogram {
  static constexpr std::array<double, 12> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  std::array<uint64_t, kBuckets.size()> counts{};
  uint64_t count = 0;
  double sum = 0;
  void observe(double seconds);
};

struct Metrics {
  uint64_t messages_in = 0, messages_out = 0, decode_errors = 0, hellos = 0, hosts_lost = 0;
  uint64_t orders_sent = 0, orders_acked = 0, orders_retried = 0, broadcasts = 0, chunk_bytes = 0;
  uint64_t auth_refused = 0;                             // messages or commands refused by key or role
  uint64_t zap_denied = 0;                               // CURVE handshakes refused by the ZAP handler
  uint64_t handler_errors = 0;                           // messages dropped because their handler threw
  uint64_t udp_heartbeats = 0;                           // heartbeat datagrams accepted
  uint64_t udp_heartbeats_sent = 0;                      // our heartbeats sent as datagrams
  std::array<uint64_t, 6> udp_rejected{};                // heartbeat datagrams dropped, by udp_hb::Reject
  std::map<std::string, uint64_t> reports;               // by outcome
  std::map<std::string, uint64_t> rollouts_ended;        // by final phase
  std::map<std::string, Histogram> phase_seconds;        // agent-reported phase durations
  std::map<std::string, uint64_t> analysis_evaluations;  // metric analysis evaluations, by verdict
  std::map<std::string, size_t> drifted_hosts;           // by service with a desired state (Convergence)
  // Artifacts this coordinator lacked, fetched from peer coordinators (peer_artifact_fetcher.h).
  uint64_t peer_fetches_ok = 0, peer_fetches_failed = 0, peer_fetch_bytes = 0;

  void observe_timing(const std::string& phase, uint64_t ms);
};

// Renders every metric; `active` are the rollouts still running.
std::string render_metrics(const Metrics& m, const fleet::Registry& reg,
                           const std::vector<const rollout::State*>& active);

// The self-refreshing status page served at "/".
const std::string& status_page_html();

}  // namespace gantry::coordinator
