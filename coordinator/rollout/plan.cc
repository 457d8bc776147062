// Plan parsing and validation. Every error names the field and the bad value, because the
// person reading it wrote a YAML file and needs to know which line to fix.
#include "coordinator/rollout/plan.h"

#include <cctype>
#include <limits>
#include <set>

namespace gantry::rollout {
namespace {

using nlohmann::json;

constexpr uint32_t kMaxCount = 1'000'000;  // far above any fleet; keeps arithmetic in range

Error plan_error(const std::string& field, const std::string& what) {
  return make_error("plan", "plan field '" + field + "': " + what);
}

// A short rendering of a JSON value for error messages.
std::string show(const json& v) {
  // The value is the operator's: escaped to ASCII, invalid UTF-8 replaced, never a throw.
  std::string s = v.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// An amount from JSON: a non-negative integer or a string "N" / "N%".
Expected<Amount> amount_field(const std::string& field, const json& v) {
  if (v.is_number_integer()) {
    int64_t n = v.get<int64_t>();
    if (n < 0 || n > kMaxCount) {
      return plan_error(field, "count " + show(v) + " is out of range (0.." + std::to_string(kMaxCount) + ")");
    }
    return Amount{false, static_cast<uint32_t>(n)};
  }
  if (v.is_string()) {
    auto a = Amount::parse(v.get<std::string>());
    if (!a) return plan_error(field, a.error().message);
    return a;
  }
  return plan_error(field, "expected a count or a percentage like \"25%\", got " + show(v));
}

// A duration: integer milliseconds, or "500ms" / "30s" / "5m" / "1h" (a bare "500" is ms).
Expected<Millis> duration_field(const std::string& field, const json& v) {
  constexpr Millis kMax = Millis{365} * 24 * 3600 * 1000;  // a year is plenty
  if (v.is_number_integer()) {
    int64_t n = v.get<int64_t>();
    if (n < 0 || n > kMax) return plan_error(field, "duration " + show(v) + " ms is out of range");
    return Millis{n};
  }
  if (!v.is_string()) {
    return plan_error(field, "expected milliseconds or a duration like \"30s\", got " + show(v));
  }
  const std::string s = v.get<std::string>();
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  const std::string num = s.substr(0, i), unit = s.substr(i);
  if (!all_digits(num)) {
    return plan_error(field, "\"" + s + "\" is not a duration (use e.g. 500ms, 30s, 5m, 1h)");
  }
  Millis mult = 0;
  if (unit.empty() || unit == "ms")
    mult = 1;
  else if (unit == "s")
    mult = 1000;
  else if (unit == "m")
    mult = 60'000;
  else if (unit == "h")
    mult = 3'600'000;
  else
    return plan_error(field, "\"" + s + "\" has an unknown unit (use ms, s, m or h)");
  Millis ms = std::stoll(num) * mult;
  if (ms > kMax) return plan_error(field, "duration \"" + s + "\" is out of range");
  return ms;
}

}  // namespace

uint32_t Amount::resolve(uint32_t total, bool at_least_one) const {
  uint64_t n = value;
  if (percent) n = (uint64_t{value} * total + 99) / 100;  // round up
  if (at_least_one && n == 0) n = 1;
  return static_cast<uint32_t>(std::min<uint64_t>(n, std::numeric_limits<uint32_t>::max()));
}

std::string Amount::str() const { return std::to_string(value) + (percent ? "%" : ""); }

Expected<Amount> Amount::parse(const std::string& s) {
  std::string t = s;
  bool pct = false;
  if (!t.empty() && t.back() == '%') {
    pct = true;
    t.pop_back();
  }
  if (!all_digits(t)) {
    return make_error("plan", "\"" + s + "\" is not a count or a percentage (e.g. 3 or 25%)");
  }
  uint64_t n = std::stoull(t);
  if (pct && n > 100) return make_error("plan", "percentage \"" + s + "\" is above 100%");
  if (!pct && n > kMaxCount) return make_error("plan", "count \"" + s + "\" is out of range");
  return Amount{pct, static_cast<uint32_t>(n)};
}

json Plan::to_json() const {
  auto amount = [](const Amount& a) -> json {
    if (a.percent) return a.str();
    return a.value;
  };
  json j;
  j["batches"] = json::array();
  for (const auto& b : batches) j["batches"].push_back(amount(b));
  j["max_failures"] = amount(max_failures);
  if (max_failures_per_batch) j["max_failures_per_batch"] = amount(*max_failures_per_batch);
  j["unknown_hosts"] = unknown_hosts_name(unknown_hosts);
  j["unknown_wait"] = unknown_wait_ms;
  j["min_healthy_time"] = min_healthy_ms;
  j["healthy_deadline"] = healthy_deadline_ms;
  j["host_timeout"] = host_timeout_ms;
  j["progress_deadline"] = progress_deadline_ms;
  j["batch_delay"] = batch_delay_ms;
  j["pause_after"] = pause_after;
  j["domain_label"] = domain_label;
  if (max_per_domain) j["max_per_domain"] = amount(*max_per_domain);
  j["auto_rollback"] = auto_rollback;
  j["rollback"] = {{"batch_size", rollback_batch_size}};
  j["converge"] = converge;
  if (analysis.enabled()) j["analysis"] = analysis.to_json();
  return j;
}

Expected<Plan> Plan::from_json(const json& j) {
  if (!j.is_object()) return make_error("plan", "a plan must be a JSON object, got " + show(j));
  static const std::set<std::string> kKnown = {
      "batches",          "max_failures",     "max_failures_per_batch", "unknown_hosts",     "unknown_wait",
      "min_healthy_time", "healthy_deadline", "host_timeout",           "progress_deadline", "batch_delay",
      "pause_after",      "domain_label",     "max_per_domain",         "auto_rollback",     "rollback",
      "analysis",         "converge"};
  for (const auto& [key, _] : j.items()) {
    if (!kKnown.count(key)) return plan_error(key, "unknown field");
  }

  Plan p;
  if (j.contains("batches")) {
    const json& b = j["batches"];
    if (!b.is_array() || b.empty()) {
      return plan_error("batches", "expected a non-empty list like [1, \"10%\", \"100%\"], got " + show(b));
    }
    p.batches.clear();
    for (size_t i = 0; i < b.size(); ++i) {
      const std::string f = "batches[" + std::to_string(i) + "]";
      auto a = amount_field(f, b[i]);
      if (!a) return a.error();
      if (a->value == 0) return plan_error(f, "a batch must have at least one host, got " + show(b[i]));
      p.batches.push_back(*a);
    }
  }
  if (j.contains("max_failures")) {
    auto a = amount_field("max_failures", j["max_failures"]);
    if (!a) return a.error();
    p.max_failures = *a;
  }
  if (j.contains("max_failures_per_batch") && !j["max_failures_per_batch"].is_null()) {
    auto a = amount_field("max_failures_per_batch", j["max_failures_per_batch"]);
    if (!a) return a.error();
    p.max_failures_per_batch = *a;
  }
  if (j.contains("unknown_hosts")) {
    const json& u = j["unknown_hosts"];
    if (!u.is_string() || (u != "fail" && u != "wait")) {
      return plan_error("unknown_hosts", "expected \"fail\" or \"wait\", got " + show(u));
    }
    p.unknown_hosts = *parse_unknown_hosts(u.get<std::string>());
  }
  struct Dur {
    const char* name;
    Millis* out;
  };
  for (Dur d : {Dur{"unknown_wait", &p.unknown_wait_ms}, Dur{"min_healthy_time", &p.min_healthy_ms},
                Dur{"healthy_deadline", &p.healthy_deadline_ms}, Dur{"host_timeout", &p.host_timeout_ms},
                Dur{"progress_deadline", &p.progress_deadline_ms}, Dur{"batch_delay", &p.batch_delay_ms}}) {
    if (!j.contains(d.name)) continue;
    auto ms = duration_field(d.name, j[d.name]);
    if (!ms) return ms.error();
    *d.out = *ms;
  }
  if (j.contains("pause_after")) {
    const json& pa = j["pause_after"];
    if (!pa.is_array()) return plan_error("pause_after", "expected a list of batch indexes, got " + show(pa));
    std::set<uint32_t> seen;
    for (size_t i = 0; i < pa.size(); ++i) {
      const json& v = pa[i];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxCount) {
        return plan_error("pause_after[" + std::to_string(i) + "]", "expected a batch index (0-based), got " + show(v));
      }
      auto idx = static_cast<uint32_t>(v.get<int64_t>());
      if (!seen.insert(idx).second) {
        return plan_error("pause_after[" + std::to_string(i) + "]",
                          "batch index " + std::to_string(idx) + " is listed twice");
      }
      p.pause_after.push_back(idx);
    }
  }
  if (j.contains("domain_label")) {
    const json& d = j["domain_label"];
    if (!d.is_string()) return plan_error("domain_label", "expected a label name, got " + show(d));
    p.domain_label = d.get<std::string>();
  }
  if (j.contains("max_per_domain") && !j["max_per_domain"].is_null()) {
    auto a = amount_field("max_per_domain", j["max_per_domain"]);
    if (!a) return a.error();
    if (a->value == 0) {
      return plan_error("max_per_domain", "must allow at least one host per domain, got " + show(j["max_per_domain"]));
    }
    if (p.domain_label.empty()) {
      return plan_error("max_per_domain", "needs domain_label (which label names the domain?)");
    }
    p.max_per_domain = *a;
  }
  if (j.contains("auto_rollback")) {
    const json& a = j["auto_rollback"];
    if (!a.is_boolean()) return plan_error("auto_rollback", "expected true or false, got " + show(a));
    p.auto_rollback = a.get<bool>();
  }
  if (j.contains("rollback")) {
    const json& r = j["rollback"];
    if (!r.is_object()) return plan_error("rollback", "expected {batch_size: N}, got " + show(r));
    for (const auto& [key, v] : r.items()) {
      if (key != "batch_size") return plan_error("rollback." + key, "unknown field");
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxCount) {
        return plan_error("rollback.batch_size", "expected a host count >= 0 (0: all at once), got " + show(v));
      }
      p.rollback_batch_size = static_cast<uint32_t>(v.get<int64_t>());
    }
  }
  if (j.contains("converge")) {
    const json& c = j["converge"];
    if (!c.is_string() || (c.get<std::string>() != "auto" && c.get<std::string>() != "report"))
      return plan_error("converge", "expected \"auto\" or \"report\", got " + show(c));
    p.converge = c.get<std::string>();
  }
  if (j.contains("analysis") && !j["analysis"].is_null()) {
    auto a = AnalysisSpec::from_json(j["analysis"]);
    if (!a) return a.error();
    p.analysis = std::move(*a);
  }
  return p;
}

}  // namespace gantry::rollout
