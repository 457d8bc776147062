// Metric analysis: the plan's `analysis` field, the judging of measurements and the gate after
// each batch, through the pure state machine with a fake clock.
#include <cmath>

#include <gtest/gtest.h>

#include "coordinator/rollout/analysis.h"
#include "coordinator/rollout/state_machine.h"
#include "rollout_test_util.h"

using namespace gantry;
using namespace gantry::rollout;
using namespace gantry::rollout::testing;
using nlohmann::json;
using V = std::vector<std::string>;

namespace {

json error_rate_query(const char* threshold = "< 0.05", int failure_limit = 1) {
  return {{"name", "error_rate"},
          {"query", "sum(rate(errors{instance=~\"{{batch_hosts}}\"}[1m]))"},
          {"threshold", threshold},
          {"interval", "10s"},
          {"failure_limit", failure_limit}};
}

Plan analysed_plan(json analysis) {
  json pj = {{"batches", {1, 2}}, {"analysis", std::move(analysis)}};
  auto p = Plan::from_json(pj);
  EXPECT_TRUE(p.ok()) << p.error().message;
  return *p;
}

Measurement value_of(uint32_t q, int gate, Millis at, double v) {
  Measurement m;
  m.query = q;
  m.gate_batch = gate;
  m.at = at;
  m.promql = "sum(rate(errors[1m]))";
  m.value = v;
  return m;
}

Measurement no_value(uint32_t q, int gate, Millis at, const std::string& why) {
  Measurement m;
  m.query = q;
  m.gate_batch = gate;
  m.at = at;
  m.promql = "sum(rate(errors[1m]))";
  m.error = why;
  return m;
}

// Starts a 3-host rollout in batches 1, 2 and reports the first batch healthy.
void first_batch_done(Driver& d, const Plan& p) {
  d.start(p, make_hosts(3));
  d.now += 100;
  d.report("web-1", Outcome::kSucceeded);
}

}  // namespace

TEST(AnalysisSpec, ParsesAndRoundTrips) {
  json a = {{"prometheus", "main"},
            {"instance_label", "metrics"},
            {"soak", "30s"},
            {"inconclusive", "fail"},
            {"queries",
             {error_rate_query(">= 0.99", 3),
              {{"name", "latency_vs_baseline"},
               {"query", "histogram_quantile(0.9, sum by (le) (rate(h_bucket{instance=~\"{{hosts}}\"}[1m])))"},
               {"compare", "ratio"},
               {"threshold", "<= 1.5"},
               {"when", "both"}}}}};
  auto s = AnalysisSpec::from_json(a);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->prometheus, "main");
  EXPECT_EQ(s->soak_ms, 30000);
  EXPECT_EQ(s->inconclusive, Inconclusive::kFail);
  ASSERT_EQ(s->queries.size(), 2u);
  EXPECT_TRUE(s->queries[0].greater);
  EXPECT_TRUE(s->queries[0].or_equal);
  EXPECT_DOUBLE_EQ(s->queries[0].limit, 0.99);
  EXPECT_EQ(s->queries[0].failure_limit, 3u);
  EXPECT_EQ(s->queries[0].interval_ms, 10000);
  EXPECT_EQ(s->queries[1].compare, Compare::kRatio);
  EXPECT_TRUE(s->queries[1].gates() && s->queries[1].continuous());
  auto again = AnalysisSpec::from_json(s->to_json());
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *s);

  // Through the plan, and absent from a plan without it.
  Plan p = analysed_plan(a);
  EXPECT_EQ(p.analysis, *s);
  EXPECT_EQ(*Plan::from_json(p.to_json()), p);
  EXPECT_FALSE(Plan{}.to_json().contains("analysis"));
}

TEST(AnalysisSpec, RefusesWhatItCannotRunNamingTheField) {
  const auto err = [](json a) {
    auto s = AnalysisSpec::from_json(a);
    return s.ok() ? std::string("accepted") : s.error().message;
  };
  EXPECT_NE(err({{"queries", json::array()}}).find("analysis.queries"), std::string::npos);
  EXPECT_NE(err({{"queries", {error_rate_query("about 3")}}}).find("queries[0].threshold"), std::string::npos);
  EXPECT_NE(err({{"queries", {error_rate_query("< nan")}}}).find("threshold"), std::string::npos);
  EXPECT_NE(err({{"queries", {error_rate_query("< 1e999")}}}).find("threshold"), std::string::npos);
  json q = error_rate_query();
  q["surprise"] = 1;
  EXPECT_NE(err({{"queries", {q}}}).find("queries[0].surprise"), std::string::npos);
  q = error_rate_query();
  q["name"] = "Bad Name";
  EXPECT_NE(err({{"queries", {q}}}).find("queries[0].name"), std::string::npos);
  q = error_rate_query();
  q["query"] = std::string("up\x01");
  EXPECT_NE(err({{"queries", {q}}}).find("queries[0].query"), std::string::npos);
  q = error_rate_query();
  q["interval"] = "10ms";
  EXPECT_NE(err({{"queries", {q}}}).find("interval"), std::string::npos);
  q = error_rate_query();
  q["baseline"] = "up";
  EXPECT_NE(err({{"queries", {q}}}).find("needs compare"), std::string::npos);
  EXPECT_NE(err({{"queries", {error_rate_query(), error_rate_query()}}}).find("used twice"), std::string::npos);
  EXPECT_NE(err({{"inconclusive", "shrug"}, {"queries", {error_rate_query()}}}).find("inconclusive"),
            std::string::npos);
  q = error_rate_query();
  q["when"] = "continuous";
  EXPECT_NE(err({{"soak", "1m"}, {"queries", {q}}}).find("soak"), std::string::npos);
  EXPECT_NE(err({{"queries", {error_rate_query()}}, {"wat", 1}}).find("analysis.wat"), std::string::npos);
  // Through the plan too.
  auto p = Plan::from_json({{"analysis", {{"queries", {error_rate_query("~ 1")}}}}});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("analysis.queries[0].threshold"), std::string::npos);
}

TEST(AnalysisJudge, ThresholdsComparisonsAndValuesThatCannotBeJudged) {
  AnalysisSpec s = *AnalysisSpec::from_json(
      {{"queries",
        {error_rate_query("< 0.05"),
         {{"name", "ratio"}, {"query", "x"}, {"compare", "ratio"}, {"threshold", "< 2"}},
         {{"name", "diff"}, {"query", "x"}, {"compare", "difference"}, {"threshold", "<= 0.01"}}}}});
  EXPECT_EQ(judge(s.queries[0], value_of(0, 0, 1, 0.01)).verdict, Verdict::kPass);
  auto j = judge(s.queries[0], value_of(0, 0, 1, 0.05));
  EXPECT_EQ(j.verdict, Verdict::kFail);
  EXPECT_EQ(j.sentence, "0.05 not < 0.05");
  EXPECT_EQ(judge(s.queries[0], value_of(0, 0, 1, std::nan(""))).verdict, Verdict::kInconclusive);
  EXPECT_EQ(judge(s.queries[0], no_value(0, 0, 1, "connection refused")).verdict, Verdict::kInconclusive);

  Measurement m = value_of(1, 0, 1, 0.3);
  m.baseline = 0.1;
  j = judge(s.queries[1], m);
  EXPECT_EQ(j.verdict, Verdict::kFail);
  EXPECT_NEAR(*j.compared, 3.0, 1e-9);
  EXPECT_NE(j.sentence.find("canary 0.3 / baseline 0.1 = 3 not < 2"), std::string::npos) << j.sentence;
  m.value = 0.1;
  m.baseline = 0.1;
  EXPECT_EQ(judge(s.queries[1], m).verdict, Verdict::kPass) << "a fleet-wide change moves both sides";
  m.value = 0;
  m.baseline = 0;
  EXPECT_EQ(judge(s.queries[1], m).verdict, Verdict::kPass) << "0 / 0 is no difference";
  m.value = 0.2;
  EXPECT_EQ(judge(s.queries[1], m).verdict, Verdict::kFail) << "errors against a clean baseline";
  m.baseline.reset();
  EXPECT_EQ(judge(s.queries[1], m).verdict, Verdict::kInconclusive) << "a comparison needs both sides";
  m.not_applicable = true;
  EXPECT_EQ(judge(s.queries[1], m).verdict, Verdict::kNotApplicable);

  Measurement d = value_of(2, 0, 1, 0.025);
  d.baseline = 0.02;
  EXPECT_EQ(judge(s.queries[2], d).verdict, Verdict::kPass);
  d.value = 0.04;
  EXPECT_EQ(judge(s.queries[2], d).verdict, Verdict::kFail);
}

TEST(AnalysisGate, WaitsForTheSoakThenOrdersTheNextBatch) {
  Plan p = analysed_plan({{"soak", "30s"}, {"queries", {error_rate_query()}}});
  Driver d;
  first_batch_done(d, p);
  EXPECT_TRUE(d.ordered().empty()) << "the next batch waits for the analysis";
  EXPECT_TRUE(d.recorded("analysing batch 1 of 2: soak 30s, then every after-batch query must pass before batch 2"));
  EXPECT_EQ(d.s.analysis.gate_batch, 0);
  const Millis opened = d.now;
  // Due at once when the gate opens, then every interval.
  EXPECT_EQ(due_queries(p.analysis, d.s.analysis, true, d.now), std::vector<uint32_t>{0});
  EXPECT_EQ(next_deadline(d.s), 0) << "no batch deadline while the gate is open";

  d.go(EvAnalysis{value_of(0, 0, d.now, 0.001)});
  EXPECT_TRUE(d.recorded("analysis error_rate (after batch 1): 0.001 < 0.05: pass"));
  EXPECT_TRUE(d.ordered().empty()) << "a pass inside the soak does not open the gate";
  EXPECT_TRUE(due_queries(p.analysis, d.s.analysis, true, d.now + 9999).empty());
  EXPECT_EQ(next_due(p.analysis, d.s.analysis, true), opened + 10000);

  d.now = opened + 30000;
  d.go(EvAnalysis{value_of(0, 0, d.now, 0.002)});
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"}));
  EXPECT_TRUE(d.recorded("analysis after batch 1 of 2 passed"));
  EXPECT_EQ(d.s.analysis.gate_batch, -1);
  EXPECT_TRUE(due_queries(p.analysis, d.s.analysis, true, d.now + 60000).empty()) << "no gate, no continuous query";

  // The last batch is analysed too before the rollout succeeds.
  d.now += 100;
  d.report("web-2", Outcome::kSucceeded);
  d.report("web-3", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  EXPECT_TRUE(d.recorded("before the rollout succeeds"));
  d.now += 30000;
  d.go(EvAnalysis{value_of(0, 1, d.now, 0.0)});
  EXPECT_EQ(d.s.phase, Phase::kSucceeded);

  // The progress survives the store (header JSON) and a late measurement is only recorded.
  auto back = State::from_json(d.s.to_json());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->analysis, d.s.analysis);
  EXPECT_EQ(back->analysis.queries[0].evaluations, 3u);
  d.go(EvAnalysis{value_of(0, 1, d.now, 0.9)});
  EXPECT_EQ(d.s.phase, Phase::kSucceeded);
  EXPECT_TRUE(d.recorded("after the rollout stopped; ignored"));
}

TEST(AnalysisGate, AFailedQueryStopsAndRollsBackAfterItsFailureLimit) {
  Plan p = analysed_plan({{"soak", "1m"}, {"queries", {error_rate_query("< 0.05", 2)}}});
  Driver d;
  first_batch_done(d, p);
  d.go(EvAnalysis{value_of(0, 0, d.now, 0.2)});
  EXPECT_TRUE(d.recorded("0.2 not < 0.05: fail (1 of 2 in a row)"));
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  d.now += 10000;
  d.go(EvAnalysis{value_of(0, 0, d.now, 0.01)});
  EXPECT_EQ(d.s.analysis.queries[0].consecutive_failures, 0u) << "a pass ends the run";
  d.now += 10000;
  d.go(EvAnalysis{value_of(0, 0, d.now, 0.3)});
  d.now += 10000;
  d.go(EvAnalysis{value_of(0, 0, d.now, 0.4)});
  EXPECT_TRUE(d.recorded("stopping: analysis error_rate failed: 0.4 not < 0.05 (2 in a row)"));
  EXPECT_EQ(d.s.phase, Phase::kRollingBack) << "within the soak, before it ends: failing early is the point";
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-1"});
  EXPECT_EQ(d.broadcasts(), std::vector<SignalKind>{SignalKind::kRollback});
  EXPECT_EQ(d.state_of("web-2"), HostState::kSkipped);
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kRolledBack);
  EXPECT_NE(d.s.end_reason.find("analysis error_rate failed"), std::string::npos);
  EXPECT_TRUE(due_queries(p.analysis, d.s.analysis, false, d.now + 100000).empty());
}

TEST(AnalysisGate, WithoutAutoRollbackAFailedAnalysisEndsFailed) {
  json pj = {{"batches", {1, 2}}, {"auto_rollback", false}, {"analysis", {{"queries", {error_rate_query()}}}}};
  Plan p = *Plan::from_json(pj);
  Driver d;
  first_batch_done(d, p);
  d.go(EvAnalysis{value_of(0, 0, d.now, 1.0)});
  EXPECT_EQ(d.s.phase, Phase::kFailed);
  EXPECT_EQ(d.state_of("web-1"), HostState::kHealthy) << "left as it is, as with a spent budget";
}

TEST(AnalysisGate, InconclusivePausesAndAValueAgainResumes) {
  Plan p = analysed_plan({{"queries", {error_rate_query()}}});  // inconclusive: pause by default
  Driver d;
  first_batch_done(d, p);
  d.go(EvAnalysis{no_value(0, 0, d.now, "cannot reach Prometheus at 127.0.0.1:9090")});
  EXPECT_EQ(d.s.phase, Phase::kPaused);
  EXPECT_TRUE(d.s.analysis.hold);
  EXPECT_TRUE(d.recorded("no value: cannot reach Prometheus at 127.0.0.1:9090: inconclusive"));
  EXPECT_TRUE(d.recorded("paused: analysis error_rate is inconclusive (inconclusive: pause)"));
  EXPECT_TRUE(d.ordered().empty()) << "never a silent pass";
  // Still measured while paused.
  EXPECT_EQ(due_queries(p.analysis, d.s.analysis, true, d.now + 10000), std::vector<uint32_t>{0});
  d.now += 10000;
  d.go(EvAnalysis{no_value(0, 0, d.now, "no data")});
  EXPECT_EQ(d.s.phase, Phase::kPaused);
  d.now += 10000;
  d.go(EvAnalysis{value_of(0, 0, d.now, 0.0)});
  EXPECT_TRUE(d.recorded("resumed: every analysis query has a value again"));
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  EXPECT_FALSE(d.s.analysis.hold);
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"})) << "the same value also passed the gate (no soak)";
}

TEST(AnalysisGate, InconclusiveFailAndIgnorePolicies) {
  {
    Plan p = analysed_plan({{"inconclusive", "fail"}, {"queries", {error_rate_query()}}});
    Driver d;
    first_batch_done(d, p);
    d.go(EvAnalysis{no_value(0, 0, d.now, "query error: parse error")});
    EXPECT_EQ(d.s.phase, Phase::kRollingBack);
    EXPECT_TRUE(d.recorded("is inconclusive (no value: query error: parse error; inconclusive: fail)"));
  }
  {
    Plan p = analysed_plan({{"inconclusive", "ignore"}, {"queries", {error_rate_query()}}});
    Driver d;
    first_batch_done(d, p);
    d.go(EvAnalysis{no_value(0, 0, d.now, "no data")});
    EXPECT_TRUE(d.recorded("inconclusive, ignored (inconclusive: ignore)"));
    EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"})) << "ignored by the plan's choice, and recorded as such";
  }
}

TEST(AnalysisGate, OperatorResumeLiftsTheHoldAndStaleEvaluationsAreIgnored) {
  Plan p = analysed_plan({{"soak", "20s"}, {"queries", {error_rate_query()}}});
  Driver d;
  first_batch_done(d, p);
  d.go(EvAnalysis{no_value(0, 0, d.now, "down")});
  ASSERT_EQ(d.s.phase, Phase::kPaused);
  d.go(EvResume{});
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  EXPECT_FALSE(d.s.analysis.hold);
  EXPECT_TRUE(d.ordered().empty()) << "the gate still needs a passing evaluation after the soak";
  // An evaluation requested for another gate says nothing about this one.
  d.now += 25000;
  d.go(EvAnalysis{value_of(0, 5, d.now, 0.0)});
  EXPECT_TRUE(d.recorded("a gate that has closed; ignored"));
  EXPECT_TRUE(d.ordered().empty());
  d.go(EvAnalysis{value_of(0, 0, d.now, 0.0)});
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"}));
}

TEST(AnalysisGate, ContinuousQueriesRunFromTheStartAndStopTheRolloutAnyTime) {
  json q = error_rate_query();
  q["when"] = "continuous";
  Plan p = analysed_plan({{"queries", {q}}});
  Driver d;
  d.start(p, make_hosts(3));
  EXPECT_EQ(due_queries(p.analysis, d.s.analysis, true, d.now), std::vector<uint32_t>{0});
  d.go(EvAnalysis{value_of(0, -1, d.now, 0.0)});
  EXPECT_EQ(next_due(p.analysis, d.s.analysis, true), d.now + 10000);
  d.now += 100;
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"})) << "continuous queries do not gate batches";
  d.now += 10000;
  d.go(EvAnalysis{value_of(0, -1, d.now, 0.5)});
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
}
