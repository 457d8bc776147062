// Metric analysis of a rollout: the plan's `analysis` field (PromQL queries, each with a
// threshold, an interval, a count of consecutive failures that fails it and when it runs) and
// the pure rules that turn measurements into verdicts and open the gate after a batch.
//
// Pure like the state machine that uses it: no clock, no I/O. Measurements are taken by the
// coordinator (coordinator/analysis/) and come in as events with the time they were taken.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::rollout {

enum class Verdict {
  kPass,
  kFail,
  kInconclusive,   // no value: Prometheus down, query error, no data, NaN
  kNotApplicable,  // a comparison with no baseline hosts (every selected host runs the new version)
};
const char* verdict_name(Verdict v);  // "pass" | "fail" | "inconclusive" | "not_applicable"

// What an inconclusive evaluation does to the rollout.
enum class Inconclusive { kPause, kFail, kIgnore };
const char* inconclusive_name(Inconclusive i);

// A comparison of the new version's hosts (canary) with the old version's (baseline).
enum class Compare { kNone, kRatio, kDifference };

// When a query runs: after each batch (the gate before the next one), during the whole rollout, or both.
enum class AnalysisWhen { kAfterBatch, kContinuous, kBoth };

struct AnalysisQuery {
  std::string name;      // [a-z0-9_], unique in the plan: how the record and /metrics name it
  std::string query;     // PromQL template ({{batch_hosts}}, {{hosts}}, ...; coordinator/analysis/query_template.h)
  std::string baseline;  // compare: the baseline's template ("": the same template)
  Compare compare = Compare::kNone;
  std::string threshold;  // as written: "< 0.01", ">= 0.99"
  bool greater = false;   // parsed threshold: the value must be > (or >=) ...
  bool or_equal = false;
  double limit = 0;
  Millis interval_ms = 30000;
  uint32_t failure_limit = 1;  // this many failing evaluations in a row fail the query
  AnalysisWhen when = AnalysisWhen::kAfterBatch;

  bool gates() const { return when != AnalysisWhen::kContinuous; }
  bool continuous() const { return when != AnalysisWhen::kAfterBatch; }
  bool operator==(const AnalysisQuery&) const = default;
};

struct AnalysisSpec {
  std::string prometheus = "default";  // a server named in the coordinator's --prometheus
  std::string instance_label;          // host label holding the host's Prometheus `instance` ("": the host id)
  Millis soak_ms = 0;                  // after each batch: judge only evaluations taken this long after it
  Inconclusive inconclusive = Inconclusive::kPause;
  std::vector<AnalysisQuery> queries;  // none: no analysis

  bool enabled() const { return !queries.empty(); }
  bool gates_batches() const;
  nlohmann::json to_json() const;
  // Validates every field; errors name it ("analysis.queries[1].threshold").
  static Expected<AnalysisSpec> from_json(const nlohmann::json& j);
  bool operator==(const AnalysisSpec&) const = default;
};

// One evaluation of one query, as the coordinator took it.
struct Measurement {
  uint32_t query = 0;              // index into AnalysisSpec::queries
  int gate_batch = -1;             // the batch whose gate was open when it was requested (-1: none)
  Millis at = 0;                   // when it was taken (the machine's time base)
  std::string promql;              // the query as sent (canary's for a comparison), already made safe and bounded
  std::optional<double> value;     // absent: error (see `error`)
  std::optional<double> baseline;  // comparisons only
  bool not_applicable = false;     // comparison without baseline hosts
  std::string error;               // why there is no value (safe, bounded)
  bool operator==(const Measurement&) const = default;
};

// The latest evaluation of a query and its run of failures: part of the rollout's state.
struct QueryProgress {
  uint64_t evaluations = 0;
  Millis last_at = 0;
  int last_gate = -1;
  Verdict last_verdict = Verdict::kInconclusive;
  std::optional<double> value, baseline, compared;
  std::string promql, message;
  uint32_t consecutive_failures = 0;
  bool failed = false;  // reached failure_limit: the analysis failed
  bool operator==(const QueryProgress&) const = default;
  nlohmann::json to_json(const AnalysisQuery* q) const;
};

struct AnalysisProgress {
  int gate_batch = -1;  // the batch whose gate is open (-1: none)
  Millis gate_since = 0, gate_until = 0;
  bool hold = false;  // the rollout is paused because an evaluation was inconclusive
  std::vector<QueryProgress> queries;
  bool operator==(const AnalysisProgress&) const = default;
  nlohmann::json to_json(const AnalysisSpec* spec = nullptr) const;
  static Expected<AnalysisProgress> from_json(const nlohmann::json& j);
};

// The threshold (and comparison) applied to a measurement: its verdict, the compared value and a sentence.
struct Judgement {
  Verdict verdict = Verdict::kInconclusive;
  std::optional<double> compared;
  std::string sentence;  // "0.042 not < 0.01", "canary 0.05 / baseline 0.01 = 5 not < 2"
};
Judgement judge(const AnalysisQuery& q, const Measurement& m);

// What applying a measurement decided.
struct Applied {
  bool applied = false;  // false: stale (its gate closed) or unknown query; only recorded
  Verdict verdict = Verdict::kInconclusive;
  bool query_failed = false;  // the query reached its failure_limit now
  std::string line;           // the event-log line
};
Applied apply_measurement(const AnalysisSpec& spec, AnalysisProgress& p, const Measurement& m);

// Whether the open gate passes: every gating query has an evaluation for this gate taken at or
// after gate_until, passing (or not applicable, or inconclusive under `ignore`). `why` says
// what it waits for when it does not.
bool gate_passed(const AnalysisSpec& spec, const AnalysisProgress& p, std::string* why);
// Whether some query's latest evaluation is inconclusive (which `pause` holds the rollout for).
bool any_inconclusive(const AnalysisSpec& spec, const AnalysisProgress& p);

// The queries due for an evaluation at `now` (active: the rollout runs or is paused, not stopping).
std::vector<uint32_t> due_queries(const AnalysisSpec& spec, const AnalysisProgress& p, bool active, Millis now);
// When query i falls due while the rollout is active (0: never, as things stand).
Millis due_at(const AnalysisSpec& spec, const AnalysisProgress& p, size_t i);
// The earliest time a query falls due (0: none).
Millis next_due(const AnalysisSpec& spec, const AnalysisProgress& p, bool active);

// A number as the record shows it (up to 6 significant digits, NaN, +Inf).
std::string fmt_value(double v);

}  // namespace gantry::rollout
