// A plan's PromQL templates filled in for one evaluation: the rollout's hosts (as Prometheus
// `instance` values, from a host label), the batch's, the new and old version's, the service
// and both versions. Pure; every value that came from a host is escaped here, once.
#pragma once

#include <string>
#include <vector>

#include "common/util/expected.h"

namespace gantry::coordinator::analysis {

struct TemplateVars {
  std::string service, new_version, old_version;
  // Prometheus instances (host label values, or host ids), not yet escaped.
  std::vector<std::string> rollout_hosts, batch_hosts, new_hosts, old_hosts;
};

// Which side of a comparison {{hosts}} and {{version}} stand for: the new version's hosts
// (canary) or the old version's (baseline).
enum class Side { kCanary, kBaseline };

// Fills in {{service}}, {{new_version}}, {{old_version}}, {{rollout_hosts}}, {{batch_hosts}},
// {{new_hosts}}, {{old_hosts}}, {{hosts}} and {{version}} (spaces inside the braces allowed).
// A host list becomes a regex alternation for `=~"..."` (each name regex-quoted, then escaped
// for a PromQL double-quoted string); other values are escaped for a double-quoted string.
// An unknown variable, an unclosed "{{" or a result over 64 KiB is an error naming it.
Expected<std::string> render(const std::string& tmpl, const TemplateVars& vars, Side side = Side::kCanary);

// Whether `instance` may stand in a query: 1..255 printable ASCII bytes (host labels are hostile).
bool instance_ok(const std::string& instance);

// `s` as the inside of a PromQL double-quoted string.
std::string promql_string(const std::string& s);

}  // namespace gantry::coordinator::analysis
