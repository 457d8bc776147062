// The rollout executor (persist, then act) driven without processes or sockets: a real SQLite
// store on a temp file, fake order and signal sinks, and a clock that moves only when told.
#include "coordinator/server/rollout_executor.h"

#include <gtest/gtest.h>

#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::FailingWrites;
using testing::FakeOrders;
using testing::FakeSignals;
using testing::TempDir;

class RolloutExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_path = dir.path + "/coordinator.db";
    store = testing::open_store(db_path);
    ASSERT_TRUE(store);
    testing::put_release(*store, "web", "v1");
    testing::put_release(*store, "web", "v2");
    exec = make_executor();
  }
  std::unique_ptr<RolloutExecutor> make_executor() {
    return std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
  }
  uint64_t start(nlohmann::json plan, int n = 4) {
    RolloutExecutor::StartRequest req;
    req.service = "web";
    req.version = "v2";
    req.plan = std::move(plan);
    req.hosts = testing::hosts(n);
    req.who = "tester";
    auto id = exec->start(std::move(req));
    EXPECT_TRUE(id) << (id ? "" : id.error().message);
    return id ? *id : 0;
  }
  proto::Report report(const FakeOrders::Sent& o, const std::string& outcome) {
    proto::Report r;
    r.order_id = o.order.order_id;
    r.rollout_id = o.order.rollout_id;
    r.service = o.order.service;
    r.outcome = outcome;
    r.running_version = outcome == "succeeded" ? o.order.version : "v1";
    return r;
  }
  // Reports every order in `sent` with `outcome`, as one pass over the agent socket would.
  void report_all(const std::vector<FakeOrders::Sent>& sent, const std::string& outcome) {
    for (const auto& o : sent) EXPECT_TRUE(exec->queue_report(o.host_id, report(o, outcome)));
    exec->flush_reports();
  }
  store::RolloutRow saved(uint64_t id) {
    auto row = store->rollout(id);
    EXPECT_TRUE(row && row->has_value());
    return row && row->has_value() ? **row : store::RolloutRow{};
  }

  TempDir dir;
  std::string db_path;
  std::unique_ptr<store::Store> store;
  FakeClock clock;
  FakeOrders orders;
  FakeSignals signals;
  Metrics metrics;
  ChangeFlag changed;
  std::unique_ptr<RolloutExecutor> exec;
};

TEST_F(RolloutExecutorTest, StartPersistsTheFirstBatchThenOrdersIt) {
  uint64_t id = start({{"batches", {"1", "100%"}}});
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].host_id, "web-1");
  EXPECT_EQ(sent[0].order.kind, "update");
  EXPECT_EQ(sent[0].order.version, "v2");
  EXPECT_EQ(sent[0].order.sha256, std::string(64, 'a'));
  // On disk before it went out: the open order and the step's state.
  auto open = store->open_orders();
  ASSERT_TRUE(open);
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ((*open)[0].order_id, sent[0].order.order_id);
  EXPECT_EQ(saved(id).phase, "running");
  EXPECT_EQ(exec->open_orders(), 1u);
  EXPECT_EQ(metrics.orders_sent, 1u);
}

TEST_F(RolloutExecutorTest, SecondRolloutOfTheSameServiceIsRefused) {
  start({});
  RolloutExecutor::StartRequest req;
  req.service = "web";
  req.version = "v2";
  req.hosts = testing::hosts(2);
  auto again = exec->start(std::move(req));
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("is still running"), std::string::npos) << again.error().message;
}

TEST_F(RolloutExecutorTest, UnknownReleaseAndNoHostsAreErrorsNotRollouts) {
  RolloutExecutor::StartRequest req;
  req.service = "web";
  req.version = "v9";
  req.hosts = testing::hosts(2);
  EXPECT_FALSE(exec->start(req));
  req.version = "v2";
  req.hosts.clear();
  EXPECT_FALSE(exec->start(req));
  EXPECT_TRUE(exec->active().empty());
  EXPECT_TRUE(orders.sent.empty());
}

TEST_F(RolloutExecutorTest, ReportsAdvanceTheBatchesToSuccess) {
  uint64_t id = start({{"batches", {"1", "100%"}}});
  report_all(orders.take(), "succeeded");
  auto second = orders.take();
  ASSERT_EQ(second.size(), 3u);  // the rest, in one batch
  report_all(second, "succeeded");
  EXPECT_TRUE(exec->active().empty());
  EXPECT_TRUE(exec->idle());
  auto row = saved(id);
  EXPECT_EQ(row.phase, "succeeded");
  EXPECT_EQ(row.revision, 1);
  EXPECT_GT(row.finished_at, 0);
  auto open = store->open_orders();
  ASSERT_TRUE(open);
  EXPECT_TRUE(open->empty());
  ASSERT_NE(exec->ended("web"), nullptr);
  EXPECT_EQ(exec->ended("web")->phase, rollout::Phase::kSucceeded);
  EXPECT_EQ(metrics.rollouts_ended["succeeded"], 1u);
  EXPECT_TRUE(signals.sent.empty());
}

TEST_F(RolloutExecutorTest, AReportForAnOrderThatIsNotOpenIsNotApplied) {
  start({});
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  auto r = report(sent[0], "succeeded");
  EXPECT_FALSE(exec->queue_report("web-2", r));  // another host's order
  r.order_id = "r99-1";
  EXPECT_FALSE(exec->queue_report("web-1", r));
  r = report(sent[0], "succeeded");
  EXPECT_TRUE(exec->queue_report("web-1", r));
  EXPECT_FALSE(exec->queue_report("web-1", r));  // a resend read in the same pass
}

TEST_F(RolloutExecutorTest, BudgetSpentStopsOrderingAndRollsBackTheChangedHosts) {
  uint64_t id = start({{"batches", {"2", "100%"}}, {"max_failures", "0"}, {"auto_rollback", true}});
  auto first = orders.take();
  ASSERT_EQ(first.size(), 2u);
  // One host healthy, the other fails: the budget (0) is spent.
  EXPECT_TRUE(exec->queue_report(first[0].host_id, report(first[0], "succeeded")));
  EXPECT_TRUE(exec->queue_report(first[1].host_id, report(first[1], "failed_reverted")));
  exec->flush_reports();
  auto after = orders.take();
  // No update goes out after the stop: only a rollback of the host that changed.
  for (const auto& o : after) EXPECT_EQ(o.order.kind, "rollback") << o.host_id;
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].host_id, first[0].host_id);
  EXPECT_EQ(after[0].order.version, "v1");
  ASSERT_EQ(signals.sent.size(), 1u);
  EXPECT_EQ(signals.sent[0].kind, rollout::SignalKind::kRollback);
  EXPECT_EQ(signals.sent[0].rollout_id, id);
  EXPECT_EQ(saved(id).phase, "rolling_back");
  report_all(after, "succeeded");
  EXPECT_EQ(saved(id).phase, "rolled_back");
  EXPECT_TRUE(exec->idle());
}

TEST_F(RolloutExecutorTest, OperatorRollbackBroadcastsAndOrdersTheChangedHostsBack) {
  uint64_t id = start({{"batches", {"1", "100%"}}});
  report_all(orders.take(), "succeeded");
  auto second = orders.take();
  ASSERT_EQ(second.size(), 3u);
  ASSERT_TRUE(exec->apply(id, rollout::EvRollback{}).ok());
  ASSERT_EQ(signals.sent.size(), 1u);
  EXPECT_EQ(signals.sent[0].kind, rollout::SignalKind::kRollback);
  auto back = orders.take();
  ASSERT_FALSE(back.empty());
  for (const auto& o : back) EXPECT_EQ(o.order.kind, "rollback");
}

TEST_F(RolloutExecutorTest, UnreachableHostsGetTheirOrderWhenTheyComeBack) {
  orders.unreachable = {"web-1"};
  start({});
  EXPECT_TRUE(orders.take().empty());
  EXPECT_EQ(exec->open_orders(), 1u);
  orders.unreachable.clear();
  proto::Hello h;
  h.host_id = "web-1";
  h.services.push_back({"web", "v1", "", "idle", ""});
  exec->host_back(h, true);
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].host_id, "web-1");
  exec->flush_reports();                  // the host-back event, applied
  EXPECT_EQ(metrics.orders_retried, 0u);  // never sent before: not a retry
}

TEST_F(RolloutExecutorTest, UnackedOrdersAreResentAfterTheResendPeriodOnly) {
  start({});
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  exec->resend_unacked(2000);
  EXPECT_TRUE(orders.take().empty());
  clock.advance(2000);
  exec->resend_unacked(2000);
  auto again = orders.take();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].order.order_id, sent[0].order.order_id);
  EXPECT_EQ(metrics.orders_retried, 1u);
  exec->ack("web-1", sent[0].order.order_id);
  ASSERT_TRUE(exec->flush_acks().ok());
  clock.advance(5000);
  exec->resend_unacked(2000);
  EXPECT_TRUE(orders.take().empty());
  auto open = store->open_orders();
  ASSERT_TRUE(open);
  ASSERT_EQ(open->size(), 1u);
  EXPECT_TRUE((*open)[0].acked);
}

TEST_F(RolloutExecutorTest, ANewExecutorOverTheSameStoreResumesWhereTheOldOneStopped) {
  uint64_t id = start({{"batches", {"1", "100%"}}});
  report_all(orders.take(), "succeeded");
  auto second = orders.take();
  ASSERT_EQ(second.size(), 3u);
  const rollout::State before = exec->find(id)->state;

  // "Crash": the executor and its memory are gone; a new one reads the store.
  exec.reset();
  store.reset();
  store = testing::open_store(db_path);
  exec = make_executor();
  ASSERT_TRUE(exec->restore().ok());
  ASSERT_NE(exec->find(id), nullptr);
  EXPECT_EQ(exec->find(id)->state, before);
  EXPECT_EQ(exec->open_orders(), 3u);
  // Nothing is ordered twice to conflicting effect: the same open orders go out again, no new ones.
  exec->resend_unacked(2000);
  auto resent = orders.take();
  ASSERT_EQ(resent.size(), 3u);
  std::set<std::string> ids_before, ids_after;
  for (const auto& o : second) ids_before.insert(o.order.order_id);
  for (const auto& o : resent) ids_after.insert(o.order.order_id);
  EXPECT_EQ(ids_before, ids_after);
  report_all(resent, "succeeded");
  EXPECT_EQ(saved(id).phase, "succeeded");
}

TEST_F(RolloutExecutorTest, ARolloutWhoseFirstStepWasNeverSavedIsMarkedFailedOnRestore) {
  store::RolloutRow row;
  row.service = "web";
  row.version = "v2";
  row.phase = "running";
  row.created_by = "tester";
  row.state = nlohmann::json::object();
  auto id = store->create_rollout(row);
  ASSERT_TRUE(id);
  ASSERT_TRUE(exec->restore().ok());
  EXPECT_EQ(exec->find(*id), nullptr);
  EXPECT_EQ(saved(*id).phase, "failed");
}

TEST_F(RolloutExecutorTest, AFailedStepWriteIsTheCallersErrorAndNothingIsActedOn) {
  uint64_t id = start({{"batches", {"1", "100%"}}});
  auto first = orders.take();
  ASSERT_EQ(first.size(), 1u);
  const rollout::State last_saved = exec->find(id)->state;
  store::ResultRow result;
  result.rollout_id = id;
  result.host_id = first[0].host_id;
  result.order_id = first[0].order.order_id;
  result.outcome = "succeeded";
  result.running_version = "v2";
  {
    FailingWrites fail(db_path, "rollouts");
    Status s = exec->apply(
        id, rollout::EvReport{result.host_id, result.order_id, rollout::Outcome::kSucceeded, "v2", ""}, &result);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("injected write failure"), std::string::npos) << s.error().message;
    // Not acted on: no order for the next batch; the state is the last saved one.
    EXPECT_TRUE(orders.take().empty());
    ASSERT_NE(exec->find(id), nullptr);
    EXPECT_EQ(exec->find(id)->state, last_saved);
    EXPECT_EQ(exec->open_orders(), 1u);

    // The same through the group commit: logged, the order stays open for the agent's resend.
    EXPECT_TRUE(exec->queue_report(first[0].host_id, report(first[0], "succeeded")));
    exec->flush_reports();
    EXPECT_TRUE(orders.take().empty());
    EXPECT_EQ(exec->find(id)->state, last_saved);
    EXPECT_EQ(exec->open_orders(), 1u);
  }
  // The store writes again: the resent report is applied and the next batch ordered.
  EXPECT_TRUE(exec->queue_report(first[0].host_id, report(first[0], "succeeded")));
  exec->flush_reports();
  EXPECT_EQ(orders.take().size(), 3u);
}

TEST_F(RolloutExecutorTest, AStartWhoseFirstStepCannotBeSavedIsRefusedAndNothingIsOrdered) {
  FailingWrites fail(db_path, "orders");
  RolloutExecutor::StartRequest req;
  req.service = "web";
  req.version = "v2";
  req.hosts = testing::hosts(3);
  auto id = exec->start(std::move(req));
  ASSERT_FALSE(id);
  EXPECT_NE(id.error().message.find("could not start"), std::string::npos) << id.error().message;
  EXPECT_TRUE(orders.sent.empty());
  EXPECT_TRUE(exec->active().empty());
}

TEST_F(RolloutExecutorTest, DeadlinesAreStepsOnTheGivenClock) {
  // A host that never reports fails at the host timeout; with a budget of 0 that ends the rollout.
  uint64_t id = start({{"batches", {"1", "100%"}}, {"host_timeout", "5s"}, {"auto_rollback", false}});
  ASSERT_EQ(orders.take().size(), 1u);
  const Millis deadline = exec->next_deadline();
  ASSERT_GT(deadline, 0);
  ASSERT_TRUE(exec->tick().ok());
  EXPECT_NE(exec->find(id), nullptr);  // not yet
  clock.advance(deadline - clock.wall_ms());
  ASSERT_TRUE(exec->tick().ok());
  EXPECT_EQ(exec->find(id), nullptr);
  EXPECT_EQ(saved(id).phase, "failed");
}

TEST_F(RolloutExecutorTest, ADeadlineThatPassedWhileInputWasUnreadWaitsForTheReadsThenTheReportCounts) {
  // The host's report arrived before its deadline but the loop had not read it (it stalled):
  // the deadline is judged up to when input was last read, the report is read, the host counts.
  uint64_t id = start({{"batches", {"1", "100%"}}, {"host_timeout", "5s"}, {"auto_rollback", false}});
  auto first = orders.take();
  ASSERT_EQ(first.size(), 1u);
  const Millis deadline = exec->next_deadline();
  clock.advance(deadline - clock.wall_ms() + 2000);  // 2 s past it, the last 2.5 s unread
  ASSERT_TRUE(exec->tick(2500).ok());
  ASSERT_NE(exec->find(id), nullptr);
  EXPECT_EQ(exec->find(id)->state.phase, rollout::Phase::kRunning);
  report_all(first, "succeeded");
  EXPECT_EQ(orders.take().size(), 3u);  // the next batch: the host counted healthy
  // Unread for less time than the deadline is past: judged as before.
  const Millis next = exec->next_deadline();
  clock.advance(next - clock.wall_ms() + 2000);
  ASSERT_TRUE(exec->tick(1000).ok());
  EXPECT_EQ(exec->find(id), nullptr);
  EXPECT_EQ(saved(id).phase, "failed");
}

TEST_F(RolloutExecutorTest, LostHostsAreOneStepPerRollout) {
  uint64_t id = start({{"batches", {"2", "100%"}}, {"unknown_hosts", "fail"}, {"max_failures", "2"}});
  auto first = orders.take();
  ASSERT_EQ(first.size(), 2u);
  ASSERT_TRUE(exec->hosts_lost({first[0].host_id, first[1].host_id, "not-in-any-rollout"}).ok());
  const auto* a = exec->find(id);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->state.find(first[0].host_id)->state, rollout::HostState::kUnknown);
  EXPECT_EQ(a->state.find(first[1].host_id)->state, rollout::HostState::kUnknown);
}

}  // namespace
}  // namespace gantry::coordinator
