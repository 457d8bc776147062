// Turns a plan and the selected hosts into the fixed host-to-batch schedule.
#pragma once

#include <string>
#include <vector>

#include "common/util/expected.h"
#include "coordinator/rollout/plan.h"
#include "coordinator/rollout/state_machine.h"

namespace gantry::rollout {

struct Schedule {
  std::vector<std::vector<std::string>> batches;   // host ids
  uint32_t failure_budget_hosts = 0;               // plan.max_failures resolved
  std::optional<uint32_t> per_batch_budget_hosts;  // resolved per batch max, if set (the largest
                                                   // of per_batch_budgets when it is a percentage)
  std::vector<uint32_t> per_batch_budgets;         // budget of each batch (empty when unset)
};

// Pure. Errors: no hosts, a batch entry of 0, max_per_domain that cannot be met, ...
Expected<Schedule> make_schedule(const Plan& plan, const std::vector<HostCandidate>& hosts);

// "role=web,zone=eu-1" -> does this host match (every pair must)? Empty selector: all hosts.
bool selector_matches(const std::map<std::string, std::string>& selector,
                      const std::map<std::string, std::string>& labels);
Expected<std::map<std::string, std::string>> parse_selector(const std::string& s);

// How many hosts of one failure domain (holding `domain_hosts` selected hosts) one batch may
// take: plan.max_per_domain, a percentage resolving against that domain's own size (at least
// one); unlimited (UINT32_MAX) when unset.
uint32_t domain_cap(const Plan& plan, uint32_t domain_hosts);

// The failure budget of one batch of `batch_size` hosts: plan.max_failures_per_batch, a
// percentage resolving against that batch's size (rounding up); nullopt when unset.
std::optional<uint32_t> batch_budget(const Plan& plan, uint32_t batch_size);

}  // namespace gantry::rollout
