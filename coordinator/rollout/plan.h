// A rollout plan: how many hosts at a time, how many may fail, how each is verified.
// Parsed from YAML (`gantry rollout start -f plan.yaml`) or flags; validated before use.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/rollout/analysis.h"
#include "coordinator/rollout/kinds.h"

namespace gantry::rollout {

// "3" or "25%". Percentages resolve against the number of selected hosts, rounding up,
// never to fewer than one host.
struct Amount {
  bool percent = false;
  uint32_t value = 0;
  uint32_t resolve(uint32_t total, bool at_least_one) const;
  std::string str() const;
  static Expected<Amount> parse(const std::string& s);
  bool operator==(const Amount&) const = default;
};

struct Plan {
  // Batch sizes as a ramp, like Ansible's `serial`: [1, 10%, 50%, 100%]. The last entry
  // repeats until every selected host is in a batch.
  std::vector<Amount> batches{Amount{false, 1}, Amount{true, 100}};
  Amount max_failures{false, 0};                     // whole rollout; exceeded when failed+unknown > this
  std::optional<Amount> max_failures_per_batch;      // unset: only the total counts
  UnknownHosts unknown_hosts = UnknownHosts::kFail;  // see UnknownHosts
  Millis unknown_wait_ms = 60000;
  Millis min_healthy_ms = 0;        // 0: each agent's configured value
  Millis healthy_deadline_ms = 0;   // 0: each agent's configured value
  Millis host_timeout_ms = 600000;  // no report this long after ordering: the host counts as failed
                                    // (0: no timeout)
  Millis progress_deadline_ms = 0;  // 0: none; whole rollout must finish by start + this
  Millis batch_delay_ms = 0;
  std::vector<uint32_t> pause_after;  // batch indexes (0-based) after which to wait for promote
  std::string domain_label;           // e.g. "zone"; empty: no failure-domain awareness
  std::optional<Amount> max_per_domain;
  bool auto_rollback = true;
  uint32_t rollback_batch_size = 0;  // 0: every changed host at once
  // Once this rollout sets the service's desired state: "auto" repairs drift (a host off the
  // desired release gets a rollout of its own), "report" only reports it.
  std::string converge = "auto";
  AnalysisSpec analysis;  // metric analysis gating batches (none: no queries)

  nlohmann::json to_json() const;
  static Expected<Plan> from_json(const nlohmann::json& j);  // validates every field
  bool operator==(const Plan&) const = default;
};

}  // namespace gantry::rollout
