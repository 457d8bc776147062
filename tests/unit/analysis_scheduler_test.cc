// The analysis scheduler driven without Prometheus or threads: the real executor over a SQLite
// store on a temp file, a fake clock, and a runner the test answers for.
#include "coordinator/analysis/analysis_scheduler.h"

#include <gtest/gtest.h>

#include "coordinator/server/rollout_executor.h"
#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using analysis::QueryJob;
using testing::FakeOrders;
using testing::FakeSignals;
using testing::TempDir;

// Keeps the jobs; the test decides what each measured.
struct FakeRunner : analysis::QueryRunner {
  std::vector<QueryJob> submitted, done;
  void submit(QueryJob job) override { submitted.push_back(std::move(job)); }
  std::vector<QueryJob> take_done() override { return std::exchange(done, {}); }
  // Answers every submitted job with `value` (or an error when unset).
  void answer_all(std::optional<double> value, const std::string& error = "") {
    for (auto& j : submitted) {
      j.m.value = value;
      if (!value) j.m.error = error;
      if (j.compare && value) j.m.baseline = 0.0;
      done.push_back(std::move(j));
    }
    submitted.clear();
  }
};

class AnalysisSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store = testing::open_store(dir.path + "/coordinator.db");
    ASSERT_TRUE(store);
    testing::put_release(*store, "web", "v1");
    testing::put_release(*store, "web", "v2");
    exec = std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
    for (int i = 1; i <= 3; ++i) {
      fleet::HostRecord r;
      r.host_id = r.identity = "web-" + std::to_string(i);
      r.labels["prom"] = "10.0.0." + std::to_string(i) + ":9100";
      r.online = true;
      registry.restore(std::move(r));
    }
    sched = std::make_unique<analysis::AnalysisScheduler>(
        *exec, registry, runner, metrics, std::map<std::string, std::string>{{"default", "http://p:9090"}},
        [this] { return clock.wall_ms(); });
  }
  uint64_t start() {
    nlohmann::json plan = {{"batches", {1, 2}},
                           {"analysis",
                            {{"instance_label", "prom"},
                             {"soak", "10s"},
                             {"queries",
                              {{{"name", "errors"},
                                {"query", "sum(rate(e{instance=~\"{{batch_hosts}}\"}[1m]))"},
                                {"threshold", "< 0.1"},
                                {"interval", "5s"}},
                               {{"name", "vs_old"},
                                {"query", "sum(rate(e{instance=~\"{{hosts}}\"}[1m]))"},
                                {"compare", "difference"},
                                {"threshold", "< 0.1"},
                                {"interval", "5s"}}}}}}};
    RolloutExecutor::StartRequest req;
    req.service = "web";
    req.version = "v2";
    req.plan = plan;
    req.hosts = testing::hosts(3);
    req.who = "tester";
    auto id = exec->start(std::move(req));
    EXPECT_TRUE(id) << (id ? "" : id.error().message);
    return id ? *id : 0;
  }
  void report_all_succeeded() {
    for (const auto& o : orders.take()) {
      proto::Report r;
      r.order_id = o.order.order_id;
      r.rollout_id = o.order.rollout_id;
      r.service = o.order.service;
      r.outcome = "succeeded";
      r.running_version = o.order.version;
      EXPECT_TRUE(exec->queue_report(o.host_id, r));
    }
    exec->flush_reports();
  }
  std::string events(uint64_t id) {
    std::string out;
    auto e = store->events(id, 0, 1000);
    if (e)
      for (const auto& ev : *e) out += ev.message + "\n";
    return out;
  }

  TempDir dir;
  std::unique_ptr<store::Store> store;
  FakeClock clock;
  FakeOrders orders;
  FakeSignals signals;
  Metrics metrics;
  ChangeFlag changed;
  fleet::Registry registry;
  FakeRunner runner;
  std::unique_ptr<RolloutExecutor> exec;
  std::unique_ptr<analysis::AnalysisScheduler> sched;
};

TEST_F(AnalysisSchedulerTest, MeasuresTheGateWithHostsMappedThroughTheirLabelThenOrdersTheNextBatch) {
  const uint64_t id = start();
  sched->tick();
  EXPECT_TRUE(runner.submitted.empty()) << "nothing is due before the first batch is done";
  report_all_succeeded();
  sched->tick();
  ASSERT_EQ(runner.submitted.size(), 2u);
  const QueryJob& errors = runner.submitted[0];
  EXPECT_EQ(errors.m.gate_batch, 0);
  EXPECT_EQ(errors.server, "http://p:9090");
  EXPECT_EQ(errors.canary, "sum(rate(e{instance=~\"10\\\\.0\\\\.0\\\\.1:9100\"}[1m]))");
  const QueryJob& vs_old = runner.submitted[1];
  EXPECT_TRUE(vs_old.compare);
  EXPECT_EQ(vs_old.canary, "sum(rate(e{instance=~\"10\\\\.0\\\\.0\\\\.1:9100\"}[1m]))") << "new version: web-1";
  EXPECT_EQ(vs_old.baseline, "sum(rate(e{instance=~\"10\\\\.0\\\\.0\\\\.2:9100|10\\\\.0\\\\.0\\\\.3:9100\"}[1m]))");
  sched->tick();
  EXPECT_EQ(runner.submitted.size(), 2u) << "a query being measured is not asked again";
  EXPECT_EQ(sched->next_due(), 0) << "nothing else due while both are measured";

  runner.answer_all(0.01);
  sched->tick();
  EXPECT_EQ(metrics.analysis_evaluations["pass"], 2u);
  EXPECT_TRUE(orders.take().empty()) << "inside the soak";
  EXPECT_NE(events(id).find("analysis errors (after batch 1): 0.01 < 0.1: pass"), std::string::npos) << events(id);
  EXPECT_EQ(sched->next_due(), clock.wall_ms() + 5000);

  clock.advance(10'000);
  sched->tick();
  ASSERT_EQ(runner.submitted.size(), 2u);
  runner.answer_all(0.02);
  sched->tick();
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 2u) << events(id);
  EXPECT_NE(events(id).find("analysis after batch 1 of 2 passed"), std::string::npos);
}

TEST_F(AnalysisSchedulerTest, AnUnreachablePrometheusPausesAndAFailingValueRollsBack) {
  const uint64_t id = start();
  report_all_succeeded();
  sched->tick();
  runner.answer_all(std::nullopt, "cannot reach Prometheus at http://p:9090: Connection");
  sched->tick();
  EXPECT_EQ(exec->find(id)->state.phase, rollout::Phase::kPaused);
  EXPECT_EQ(metrics.analysis_evaluations["inconclusive"], 2u);
  // Measured again while paused; a failing value stops it and rolls web-1 back.
  clock.advance(5000);
  sched->tick();
  ASSERT_EQ(runner.submitted.size(), 2u);
  runner.answer_all(0.9);
  sched->tick();
  EXPECT_EQ(exec->find(id)->state.phase, rollout::Phase::kRollingBack) << events(id);
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].order.kind, "rollback");
  clock.advance(60'000);
  sched->tick();
  EXPECT_TRUE(runner.submitted.empty()) << "a stopped rollout is not measured";
}

}  // namespace
}  // namespace gantry::coordinator
