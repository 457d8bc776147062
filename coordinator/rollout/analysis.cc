// The plan's `analysis` field and the rules that judge its measurements. See analysis.h.
//
// Rules (the README's "Gating on metrics" is written from these):
//   - A measurement with no value (Prometheus unreachable, a query error, no data, NaN, a
//     series count other than one) is inconclusive; it neither passes nor fails the query and
//     leaves its run of failures as it was.
//   - A value failing the threshold adds one to the query's run of failures; failure_limit in a
//     row fail the query (and the rollout: the state machine stops it as a spent budget does).
//     A passing value ends the run.
//   - A comparison judges canary / baseline (ratio) or canary - baseline (difference). A ratio
//     with a zero baseline is 1 when the canary is 0 too, else +Inf. Without baseline hosts
//     (every selected host runs the new version) a comparison is not applicable: recorded as
//     such, never counted as a failure or a pass of its threshold.
//   - The gate after batch N opens when the batch is done; it passes once every gating query
//     has an evaluation taken for that gate at or after gate_since + soak that passed (or was
//     not applicable, or inconclusive with `inconclusive: ignore`). Failing evaluations during
//     the soak count. Evaluations taken for a gate that has closed since are recorded and
//     ignored.
//   - Due: a gating query at once when its gate opens, then every interval; a continuous query
//     every interval from the start; both only while the rollout runs or is paused and has not
//     stopped.
#include "coordinator/rollout/analysis.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <stdexcept>

namespace gantry::rollout {
namespace {

using nlohmann::json;

constexpr size_t kMaxQueries = 16;
constexpr size_t kMaxQueryBytes = 4096;
constexpr Millis kMinInterval = 100;
constexpr Millis kMaxDuration = Millis{24} * 3600 * 1000;

Error field_error(const std::string& field, const std::string& what) {
  return make_error("plan", "plan field 'analysis" + (field.empty() ? "" : "." + field) + "': " + what);
}

std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

Expected<Millis> duration(const std::string& field, const json& v) {
  if (v.is_number_integer()) {
    const int64_t n = v.get<int64_t>();
    if (n < 0 || n > kMaxDuration) return field_error(field, "duration " + show(v) + " ms is out of range");
    return Millis{n};
  }
  if (!v.is_string()) return field_error(field, "expected milliseconds or a duration like \"30s\", got " + show(v));
  const std::string s = v.get<std::string>();
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  const std::string num = s.substr(0, i), unit = s.substr(i);
  if (num.empty() || num.size() > 9) return field_error(field, "\"" + s + "\" is not a duration (e.g. 500ms, 30s, 5m)");
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
    return field_error(field, "\"" + s + "\" has an unknown unit (use ms, s, m or h)");
  const Millis ms = std::stoll(num) * mult;
  if (ms > kMaxDuration) return field_error(field, "duration \"" + s + "\" is out of range (at most 24h)");
  return ms;
}

std::string fmt_ms(Millis ms) {
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

bool name_ok(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_'))
      return false;
  }
  return true;
}

// A PromQL template: printable text (newlines and tabs allowed), bounded.
bool query_text_ok(const std::string& q) {
  if (q.empty() || q.size() > kMaxQueryBytes) return false;
  for (unsigned char c : q) {
    if (c < 0x20 && c != '\n' && c != '\t') return false;
    if (c == 0x7f) return false;
  }
  return true;
}

// "< 0.01", "<=0.5", "> 0.99", ">= 1": the operator and a finite number.
bool parse_threshold(const std::string& t, AnalysisQuery& q) {
  size_t i = 0;
  while (i < t.size() && t[i] == ' ') ++i;
  if (i >= t.size() || (t[i] != '<' && t[i] != '>')) return false;
  q.greater = t[i] == '>';
  ++i;
  q.or_equal = i < t.size() && t[i] == '=';
  if (q.or_equal) ++i;
  while (i < t.size() && t[i] == ' ') ++i;
  const std::string num = t.substr(i);
  if (num.empty() || num.size() > 32) return false;
  for (char c : num) {
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E'))
      return false;
  }
  char* end = nullptr;
  const double v = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size() || !std::isfinite(v)) return false;
  q.limit = v;
  return true;
}

const char* compare_name(Compare c) {
  switch (c) {
    case Compare::kNone:
      return "none";
    case Compare::kRatio:
      return "ratio";
    case Compare::kDifference:
      return "difference";
  }
  return "?";
}
const char* when_name(AnalysisWhen w) {
  switch (w) {
    case AnalysisWhen::kAfterBatch:
      return "after_batch";
    case AnalysisWhen::kContinuous:
      return "continuous";
    case AnalysisWhen::kBoth:
      return "both";
  }
  return "?";
}

Expected<AnalysisQuery> query_from_json(const std::string& f, const json& j) {
  if (!j.is_object()) return field_error(f, "expected a map with name, query and threshold, got " + show(j));
  static const std::set<std::string> kKnown = {"name",      "query",    "baseline",      "compare",
                                               "threshold", "interval", "failure_limit", "when"};
  for (const auto& [key, _] : j.items()) {
    if (!kKnown.count(key)) return field_error(f + "." + key, "unknown field");
  }
  AnalysisQuery q;
  if (!j.contains("name") || !j["name"].is_string() || !name_ok(j["name"].get<std::string>())) {
    return field_error(f + ".name", "expected a name of a-z, 0-9 and _ (at most 64), got " +
                                        (j.contains("name") ? show(j["name"]) : std::string("nothing")));
  }
  q.name = j["name"].get<std::string>();
  for (const char* k : {"query", "baseline"}) {
    if (!j.contains(k)) continue;
    const json& v = j[k];
    if (!v.is_string() || !query_text_ok(v.get<std::string>())) {
      return field_error(f + "." + k, "expected PromQL text (printable, at most " + std::to_string(kMaxQueryBytes) +
                                          " bytes), got " + show(v));
    }
    (std::string(k) == "query" ? q.query : q.baseline) = v.get<std::string>();
  }
  if (q.query.empty()) return field_error(f + ".query", "missing (the PromQL to evaluate)");
  if (j.contains("compare")) {
    const json& c = j["compare"];
    const std::string s = c.is_string() ? c.get<std::string>() : "";
    if (s == "ratio")
      q.compare = Compare::kRatio;
    else if (s == "difference")
      q.compare = Compare::kDifference;
    else if (s == "none")
      q.compare = Compare::kNone;
    else
      return field_error(f + ".compare", "expected ratio, difference or none, got " + show(c));
  }
  if (!q.baseline.empty() && q.compare == Compare::kNone) {
    return field_error(f + ".baseline", "needs compare: ratio or difference");
  }
  if (!j.contains("threshold") || !j["threshold"].is_string() ||
      !parse_threshold(j["threshold"].get<std::string>(), q)) {
    return field_error(f + ".threshold",
                       "expected a condition the value must meet like \"< 0.01\" or \">= 0.99\", got " +
                           (j.contains("threshold") ? show(j["threshold"]) : std::string("nothing")));
  }
  q.threshold = j["threshold"].get<std::string>();
  if (j.contains("interval")) {
    auto ms = duration(f + ".interval", j["interval"]);
    if (!ms) return ms.error();
    if (*ms < kMinInterval) return field_error(f + ".interval", "at least " + fmt_ms(kMinInterval));
    q.interval_ms = *ms;
  }
  if (j.contains("failure_limit")) {
    const json& v = j["failure_limit"];
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 1000) {
      return field_error(f + ".failure_limit", "expected a count of failures in a row, 1..1000, got " + show(v));
    }
    q.failure_limit = static_cast<uint32_t>(v.get<int64_t>());
  }
  if (j.contains("when")) {
    const json& w = j["when"];
    const std::string s = w.is_string() ? w.get<std::string>() : "";
    if (s == "after_batch")
      q.when = AnalysisWhen::kAfterBatch;
    else if (s == "continuous")
      q.when = AnalysisWhen::kContinuous;
    else if (s == "both")
      q.when = AnalysisWhen::kBoth;
    else
      return field_error(f + ".when", "expected after_batch, continuous or both, got " + show(w));
  }
  return q;
}

std::string condition(const AnalysisQuery& q) {
  return std::string(q.greater ? ">" : "<") + (q.or_equal ? "=" : "") + " " + fmt_value(q.limit);
}

bool meets(const AnalysisQuery& q, double v) {
  if (q.greater) return q.or_equal ? v >= q.limit : v > q.limit;
  return q.or_equal ? v <= q.limit : v < q.limit;
}

json opt_num(const std::optional<double>& v) {
  if (!v) return nullptr;
  if (std::isfinite(*v)) return *v;
  return fmt_value(*v);  // JSON has no NaN or Inf
}

}  // namespace

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kPass:
      return "pass";
    case Verdict::kFail:
      return "fail";
    case Verdict::kInconclusive:
      return "inconclusive";
    case Verdict::kNotApplicable:
      return "not_applicable";
  }
  return "?";
}

const char* inconclusive_name(Inconclusive i) {
  switch (i) {
    case Inconclusive::kPause:
      return "pause";
    case Inconclusive::kFail:
      return "fail";
    case Inconclusive::kIgnore:
      return "ignore";
  }
  return "?";
}

std::string fmt_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

bool AnalysisSpec::gates_batches() const {
  for (const auto& q : queries)
    if (q.gates()) return true;
  return false;
}

json AnalysisSpec::to_json() const {
  json qs = json::array();
  for (const auto& q : queries) {
    json o = {{"name", q.name},
              {"query", q.query},
              {"threshold", q.threshold},
              {"interval", q.interval_ms},
              {"failure_limit", q.failure_limit},
              {"when", when_name(q.when)}};
    if (q.compare != Compare::kNone) o["compare"] = compare_name(q.compare);
    if (!q.baseline.empty()) o["baseline"] = q.baseline;
    qs.push_back(std::move(o));
  }
  return {{"prometheus", prometheus},
          {"instance_label", instance_label},
          {"soak", soak_ms},
          {"inconclusive", inconclusive_name(inconclusive)},
          {"queries", qs}};
}

Expected<AnalysisSpec> AnalysisSpec::from_json(const json& j) {
  if (!j.is_object()) return field_error("", "expected a map with queries, got " + show(j));
  static const std::set<std::string> kKnown = {"prometheus", "instance_label", "soak", "inconclusive", "queries"};
  for (const auto& [key, _] : j.items()) {
    if (!kKnown.count(key)) return field_error(key, "unknown field");
  }
  AnalysisSpec s;
  if (j.contains("prometheus")) {
    const json& v = j["prometheus"];
    if (!v.is_string() || !name_ok(v.get<std::string>()))
      return field_error("prometheus",
                         "expected the name of a server in the coordinator's --prometheus, got " + show(v));
    s.prometheus = v.get<std::string>();
  }
  if (j.contains("instance_label")) {
    const json& v = j["instance_label"];
    const std::string l = v.is_string() ? v.get<std::string>() : std::string("\x01");
    bool ok = l.size() <= 64;
    for (char c : l)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '/')) ok = false;
    if (!ok) return field_error("instance_label", "expected a host label name, got " + show(v));
    s.instance_label = l;
  }
  if (j.contains("soak")) {
    auto ms = duration("soak", j["soak"]);
    if (!ms) return ms.error();
    s.soak_ms = *ms;
  }
  if (j.contains("inconclusive")) {
    const json& v = j["inconclusive"];
    const std::string p = v.is_string() ? v.get<std::string>() : "";
    if (p == "pause")
      s.inconclusive = Inconclusive::kPause;
    else if (p == "fail")
      s.inconclusive = Inconclusive::kFail;
    else if (p == "ignore")
      s.inconclusive = Inconclusive::kIgnore;
    else
      return field_error("inconclusive", "expected pause, fail or ignore, got " + show(v));
  }
  if (!j.contains("queries") || !j["queries"].is_array() || j["queries"].empty() || j["queries"].size() > kMaxQueries) {
    return field_error("queries", "expected a list of 1.." + std::to_string(kMaxQueries) + " queries, got " +
                                      (j.contains("queries") ? show(j["queries"]) : std::string("nothing")));
  }
  std::set<std::string> names;
  for (size_t i = 0; i < j["queries"].size(); ++i) {
    const std::string f = "queries[" + std::to_string(i) + "]";
    auto q = query_from_json(f, j["queries"][i]);
    if (!q) return q.error();
    if (!names.insert(q->name).second) return field_error(f + ".name", "\"" + q->name + "\" is used twice");
    s.queries.push_back(std::move(*q));
  }
  if (s.soak_ms > 0 && !s.gates_batches()) {
    return field_error("soak", "needs a query that runs after each batch (when: after_batch or both)");
  }
  return s;
}

json QueryProgress::to_json(const AnalysisQuery* q) const {
  json j = {{"evaluations", evaluations},
            {"last_at", last_at},
            {"last_gate", last_gate},
            {"verdict", evaluations ? verdict_name(last_verdict) : "none"},
            {"value", opt_num(value)},
            {"baseline", opt_num(baseline)},
            {"compared", opt_num(compared)},
            {"promql", promql},
            {"message", message},
            {"consecutive_failures", consecutive_failures},
            {"failed", failed}};
  if (q) {
    j["name"] = q->name;
    j["threshold"] = condition(*q);
    j["failure_limit"] = q->failure_limit;
  }
  return j;
}

json AnalysisProgress::to_json(const AnalysisSpec* spec) const {
  json qs = json::array();
  for (size_t i = 0; i < queries.size(); ++i) {
    const AnalysisQuery* q = spec && i < spec->queries.size() ? &spec->queries[i] : nullptr;
    qs.push_back(queries[i].to_json(q));
  }
  return {{"gate_batch", gate_batch},
          {"gate_since", gate_since},
          {"gate_until", gate_until},
          {"hold", hold},
          {"queries", qs}};
}

namespace {
std::optional<double> num_from(const json& v) {
  if (v.is_null()) return std::nullopt;
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "NaN") return std::nan("");
    if (s == "+Inf") return HUGE_VAL;
    if (s == "-Inf") return -HUGE_VAL;
  }
  throw std::runtime_error("not a number: " + show(v));
}
}  // namespace

Expected<AnalysisProgress> AnalysisProgress::from_json(const json& j) {
  try {
    AnalysisProgress p;
    j.at("gate_batch").get_to(p.gate_batch);
    j.at("gate_since").get_to(p.gate_since);
    j.at("gate_until").get_to(p.gate_until);
    j.at("hold").get_to(p.hold);
    for (const auto& qj : j.at("queries")) {
      QueryProgress q;
      qj.at("evaluations").get_to(q.evaluations);
      qj.at("last_at").get_to(q.last_at);
      qj.at("last_gate").get_to(q.last_gate);
      const std::string v = qj.at("verdict").get<std::string>();
      q.last_verdict = v == "pass"             ? Verdict::kPass
                       : v == "fail"           ? Verdict::kFail
                       : v == "not_applicable" ? Verdict::kNotApplicable
                                               : Verdict::kInconclusive;
      q.value = num_from(qj.at("value"));
      q.baseline = num_from(qj.at("baseline"));
      q.compared = num_from(qj.at("compared"));
      qj.at("promql").get_to(q.promql);
      qj.at("message").get_to(q.message);
      qj.at("consecutive_failures").get_to(q.consecutive_failures);
      qj.at("failed").get_to(q.failed);
      p.queries.push_back(std::move(q));
      if (p.queries.size() > kMaxQueries) return make_error("state", "stored analysis: too many queries");
    }
    return p;
  } catch (const std::exception& ex) {
    return make_error("state", std::string("stored analysis progress is malformed: ") + ex.what());
  }
}

Judgement judge(const AnalysisQuery& q, const Measurement& m) {
  Judgement j;
  if (m.not_applicable) {
    j.verdict = Verdict::kNotApplicable;
    j.sentence = "not applicable: no host runs the old version to compare with";
    return j;
  }
  if (!m.value || (q.compare != Compare::kNone && !m.baseline)) {
    j.sentence = "no value: " + (m.error.empty() ? std::string("no data") : m.error);
    return j;
  }
  double v = *m.value;
  std::string what = fmt_value(v);
  if (q.compare == Compare::kRatio) {
    const double b = *m.baseline;
    v = b == 0 ? (*m.value == 0 ? 1.0 : HUGE_VAL) : *m.value / b;
    what = "canary " + fmt_value(*m.value) + " / baseline " + fmt_value(b) + " = " + fmt_value(v);
  } else if (q.compare == Compare::kDifference) {
    v = *m.value - *m.baseline;
    what = "canary " + fmt_value(*m.value) + " - baseline " + fmt_value(*m.baseline) + " = " + fmt_value(v);
  }
  j.compared = v;
  if (std::isnan(v)) {
    j.sentence = what + ": no value to judge (NaN)";
    return j;
  }
  const bool ok = meets(q, v);
  j.verdict = ok ? Verdict::kPass : Verdict::kFail;
  j.sentence = what + (ok ? " " : " not ") + condition(q);
  return j;
}

Applied apply_measurement(const AnalysisSpec& spec, AnalysisProgress& p, const Measurement& m) {
  Applied a;
  if (m.query >= spec.queries.size()) {
    a.line =
        "analysis: a measurement for query #" + std::to_string(m.query) + ", which the plan does not have; ignored";
    return a;
  }
  const AnalysisQuery& q = spec.queries[m.query];
  if (p.queries.size() < spec.queries.size()) p.queries.resize(spec.queries.size());
  QueryProgress& qp = p.queries[m.query];
  const std::string where = m.gate_batch >= 0 ? " (after batch " + std::to_string(m.gate_batch + 1) + ")" : "";
  // A gating-only query's evaluation for a gate that has closed since says nothing about now.
  if (!q.continuous() && m.gate_batch != p.gate_batch) {
    a.line = "analysis " + q.name + where + ": evaluation taken for a gate that has closed; ignored";
    return a;
  }
  if (m.at < qp.last_at) {
    a.line = "analysis " + q.name + where + ": evaluation older than the last one; ignored";
    return a;
  }
  const Judgement j = judge(q, m);
  a.applied = true;
  a.verdict = j.verdict;
  ++qp.evaluations;
  qp.last_at = m.at;
  qp.last_gate = m.gate_batch;
  qp.last_verdict = j.verdict;
  qp.value = m.value;
  qp.baseline = m.baseline;
  qp.compared = j.compared;
  qp.promql = m.promql;
  qp.message = j.sentence;
  std::string tail;
  if (j.verdict == Verdict::kFail) {
    ++qp.consecutive_failures;
    tail = " (" + std::to_string(qp.consecutive_failures) + " of " + std::to_string(q.failure_limit) + " in a row)";
    if (qp.consecutive_failures >= q.failure_limit && !qp.failed) {
      qp.failed = true;
      a.query_failed = true;
    }
  } else if (j.verdict == Verdict::kPass) {
    qp.consecutive_failures = 0;
  }
  a.line = "analysis " + q.name + where + ": " + j.sentence + ": " + verdict_name(j.verdict) + tail +
           " [query: " + m.promql + "]";
  return a;
}

namespace {
bool counts_as_pass(const AnalysisSpec& spec, Verdict v) {
  return v == Verdict::kPass || v == Verdict::kNotApplicable ||
         (v == Verdict::kInconclusive && spec.inconclusive == Inconclusive::kIgnore);
}
}  // namespace

bool gate_passed(const AnalysisSpec& spec, const AnalysisProgress& p, std::string* why) {
  if (p.gate_batch < 0) return true;
  for (size_t i = 0; i < spec.queries.size(); ++i) {
    const AnalysisQuery& q = spec.queries[i];
    if (!q.gates()) continue;
    const QueryProgress* qp = i < p.queries.size() ? &p.queries[i] : nullptr;
    if (!qp || qp->evaluations == 0 || qp->last_gate != p.gate_batch || qp->last_at < p.gate_until) {
      if (why) *why = "waiting for " + q.name + " to be evaluated after the soak";
      return false;
    }
    if (qp->failed || !counts_as_pass(spec, qp->last_verdict)) {
      if (why) *why = q.name + " is " + verdict_name(qp->last_verdict);
      return false;
    }
  }
  return true;
}

bool any_inconclusive(const AnalysisSpec& spec, const AnalysisProgress& p) {
  for (size_t i = 0; i < p.queries.size() && i < spec.queries.size(); ++i) {
    const QueryProgress& qp = p.queries[i];
    if (qp.evaluations == 0 || qp.last_verdict != Verdict::kInconclusive) continue;
    // A gating-only query's evaluation from an earlier gate no longer speaks for the rollout.
    if (!spec.queries[i].continuous() && qp.last_gate != p.gate_batch) continue;
    return true;
  }
  return false;
}

Millis due_at(const AnalysisSpec& spec, const AnalysisProgress& p, size_t i) {
  const AnalysisQuery& q = spec.queries[i];
  const QueryProgress* qp = i < p.queries.size() ? &p.queries[i] : nullptr;
  const Millis last = qp && qp->evaluations ? qp->last_at : 0;
  Millis best = 0;
  const auto take = [&](Millis t) {
    if (best == 0 || t < best) best = t;
  };
  if (q.gates() && p.gate_batch >= 0) {
    if (!qp || qp->evaluations == 0 || qp->last_gate != p.gate_batch || last < p.gate_since)
      take(p.gate_since);
    else
      take(last + q.interval_ms);
  }
  if (q.continuous()) take(last == 0 ? 1 : last + q.interval_ms);
  return best;
}

std::vector<uint32_t> due_queries(const AnalysisSpec& spec, const AnalysisProgress& p, bool active, Millis now) {
  std::vector<uint32_t> out;
  if (!active) return out;
  for (size_t i = 0; i < spec.queries.size(); ++i) {
    const Millis t = due_at(spec, p, i);
    if (t != 0 && t <= now) out.push_back(static_cast<uint32_t>(i));
  }
  return out;
}

Millis next_due(const AnalysisSpec& spec, const AnalysisProgress& p, bool active) {
  if (!active) return 0;
  Millis best = 0;
  for (size_t i = 0; i < spec.queries.size(); ++i) {
    const Millis t = due_at(spec, p, i);
    if (t != 0 && (best == 0 || t < best)) best = t;
  }
  return best;
}

}  // namespace gantry::rollout
