// The schedule: which host goes in which batch. Fixed at start so that `gantry rollout plan`
// shows exactly what will happen.
//
// Batches are sizes (Ansible `serial`): each ramp entry resolves against the number of
// selected hosts (percentages round up, at least one host), the last entry repeats until every
// host is scheduled, and a batch never exceeds the hosts left. With a domain_label the hosts
// are grouped by that label's value (hosts without the label form the domain ""), domains are
// visited in sorted order, and each batch is filled greedily from the earliest domain that still
// has hosts, taking at most domain_cap() hosts from any one domain; a batch then may be smaller
// than its nominal size. Within a domain (and without domain_label) hosts keep the given order.
#include "coordinator/rollout/planner.h"

#include <algorithm>
#include <limits>
#include <set>

namespace gantry::rollout {

uint32_t domain_cap(const Plan& plan, uint32_t domain_hosts) {
  if (!plan.max_per_domain) return std::numeric_limits<uint32_t>::max();
  return plan.max_per_domain->resolve(domain_hosts, true);
}

std::optional<uint32_t> batch_budget(const Plan& plan, uint32_t batch_size) {
  if (!plan.max_failures_per_batch) return std::nullopt;
  return plan.max_failures_per_batch->resolve(batch_size, false);
}

Expected<Schedule> make_schedule(const Plan& plan, const std::vector<HostCandidate>& hosts) {
  if (hosts.empty()) return make_error("plan", "no hosts match the selector");
  if (plan.batches.empty()) return make_error("plan", "plan field 'batches': the list is empty");
  for (size_t i = 0; i < plan.batches.size(); ++i) {
    if (plan.batches[i].value == 0) {
      return make_error("plan", "plan field 'batches[" + std::to_string(i) +
                                    "]': a batch must have at least one host, got " + plan.batches[i].str());
    }
    if (plan.batches[i].percent && plan.batches[i].value > 100) {
      return make_error("plan",
                        "plan field 'batches[" + std::to_string(i) + "]': " + plan.batches[i].str() + " is above 100%");
    }
  }
  if (plan.max_per_domain && plan.domain_label.empty()) {
    return make_error("plan", "plan field 'max_per_domain': needs domain_label");
  }
  if (plan.max_per_domain && plan.max_per_domain->value == 0) {
    return make_error("plan",
                      "plan field 'max_per_domain': 0 hosts per domain can never make "
                      "progress");
  }
  std::set<std::string> ids;
  for (const auto& h : hosts) {
    if (h.host_id.empty()) return make_error("plan", "a selected host has an empty host id");
    if (!ids.insert(h.host_id).second) {
      return make_error("plan", "host '" + h.host_id + "' is selected twice");
    }
  }

  const auto total = static_cast<uint32_t>(hosts.size());

  // Domains in sorted order; hosts keep the given order inside each.
  std::map<std::string, std::vector<std::string>> domains;
  for (const auto& h : hosts) {
    std::string d;
    if (!plan.domain_label.empty()) {
      auto it = h.labels.find(plan.domain_label);
      if (it != h.labels.end()) d = it->second;
    }
    domains[d].push_back(h.host_id);
  }
  struct Cursor {
    std::vector<std::string>* hosts;
    size_t next = 0;
    uint32_t cap = 0;
  };
  std::vector<Cursor> cursors;
  for (auto& [name, list] : domains) {
    cursors.push_back({&list, 0, domain_cap(plan, static_cast<uint32_t>(list.size()))});
  }

  Schedule out;
  uint32_t scheduled = 0;
  for (size_t entry = 0; scheduled < total; ++entry) {
    const Amount& a = plan.batches[std::min(entry, plan.batches.size() - 1)];
    const uint32_t nominal = std::min(a.resolve(total, true), total - scheduled);
    std::vector<std::string> batch;
    for (auto& c : cursors) {
      uint32_t taken = 0;
      while (batch.size() < nominal && c.next < c.hosts->size() && taken < c.cap) {
        batch.push_back((*c.hosts)[c.next++]);
        ++taken;
      }
      if (batch.size() == nominal) break;
    }
    if (batch.empty()) {
      return make_error("plan", "batch " + std::to_string(entry) + " cannot take any host within max_per_domain");
    }
    scheduled += static_cast<uint32_t>(batch.size());
    out.batches.push_back(std::move(batch));
  }

  for (size_t i = 0; i < plan.pause_after.size(); ++i) {
    if (plan.pause_after[i] >= out.batches.size()) {
      return make_error("plan", "plan field 'pause_after[" + std::to_string(i) + "]': batch " +
                                    std::to_string(plan.pause_after[i]) + " does not exist (" +
                                    std::to_string(out.batches.size()) + " batches, 0-based)");
    }
  }

  out.failure_budget_hosts = plan.max_failures.resolve(total, false);
  if (plan.max_failures_per_batch) {
    uint32_t largest = 0;
    for (const auto& b : out.batches) {
      uint32_t v = *batch_budget(plan, static_cast<uint32_t>(b.size()));
      out.per_batch_budgets.push_back(v);
      largest = std::max(largest, v);
    }
    out.per_batch_budget_hosts = plan.max_failures_per_batch->percent ? largest : plan.max_failures_per_batch->value;
  }
  return out;
}

bool selector_matches(const std::map<std::string, std::string>& selector,
                      const std::map<std::string, std::string>& labels) {
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

Expected<std::map<std::string, std::string>> parse_selector(const std::string& s) {
  std::map<std::string, std::string> out;
  auto trim = [](std::string t) {
    const char* ws = " \t";
    t.erase(0, t.find_first_not_of(ws));
    auto e = t.find_last_not_of(ws);
    t.erase(e == std::string::npos ? 0 : e + 1);
    return t;
  };
  if (trim(s).empty()) return out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    std::string pair = trim(s.substr(start, comma - start));
    size_t eq = pair.find('=');
    if (eq == std::string::npos) {
      return make_error("selector", "selector \"" + s + "\": \"" + pair + "\" is not label=value");
    }
    std::string k = trim(pair.substr(0, eq)), v = trim(pair.substr(eq + 1));
    if (k.empty() || v.empty()) {
      return make_error("selector", "selector \"" + s + "\": \"" + pair + "\" needs both a label and a value");
    }
    if (out.count(k) && out[k] != v) {
      return make_error("selector", "selector \"" + s + "\": label '" + k + "' is given two different values");
    }
    out[k] = v;
    start = comma + 1;
  }
  return out;
}

}  // namespace gantry::rollout
