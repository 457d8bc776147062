// Desired state and convergence: how each way a rollout ends sets the desired state (pure), and
// drift found and repaired — or only reported — through the real executor, a real SQLite store,
// a real registry fed with hellos, a fake order sink and a clock that moves only when told.
#include "coordinator/server/convergence.h"

#include <gtest/gtest.h>

#include "coordinator/server/desired_state.h"
#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::FakeOrders;
using testing::FakeSignals;
using testing::TempDir;

rollout::State ended_state(rollout::Phase phase, const std::vector<std::string>& from) {
  rollout::State s;
  s.id = 9;
  s.service = "web";
  s.version = "v2";
  s.selector = "role=web";
  s.phase = phase;
  for (size_t i = 0; i < from.size(); ++i) {
    rollout::HostSlot h;
    h.host_id = "web-" + std::to_string(i + 1);
    h.from_version = from[i];
    s.hosts.push_back(h);
  }
  return s;
}

store::DesiredRow desired_row(const std::string& version) {
  store::DesiredRow d;
  d.service = "web";
  d.version = version;
  d.selector = "role=web";
  d.rollout_id = 3;
  return d;
}

TEST(DesiredState, AfterEachWayARolloutEnds) {
  const auto before = std::optional(desired_row("v1"));
  // Succeeded: what it installed, with its selector and policy.
  auto s = ended_state(rollout::Phase::kSucceeded, {"v1", "v1"});
  s.plan.converge = "report";
  auto d = desired_after(s, "rollout", before, 5);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->version, "v2");
  EXPECT_EQ(d->selector, "role=web");
  EXPECT_EQ(d->converge, "report");
  EXPECT_EQ(d->rollout_id, 9u);
  EXPECT_FALSE(d->held);
  // Rolled back: what it was before.
  d = desired_after(ended_state(rollout::Phase::kRolledBack, {"v1", "v1"}), "rollout", before, 5);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->version, "v1");
  EXPECT_FALSE(d->held);
  EXPECT_EQ(d->rollout_id, 9u);
  // ... with nothing before: what most of its hosts ran.
  d = desired_after(ended_state(rollout::Phase::kRolledBack, {"v0", "v1", "v1", ""}), "rollout", std::nullopt, 5);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->version, "v1");
  EXPECT_FALSE(desired_after(ended_state(rollout::Phase::kRolledBack, {"", ""}), "rollout", std::nullopt, 5));
  // Failed or aborted: held where it was (nothing to hold without a desired state).
  for (auto p : {rollout::Phase::kFailed, rollout::Phase::kAborted}) {
    d = desired_after(ended_state(p, {"v1"}), "rollout", before, 5);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->version, "v1");
    EXPECT_TRUE(d->held);
    EXPECT_FALSE(desired_after(ended_state(p, {"v1"}), "rollout", std::nullopt, 5));
  }
  // A rollback to an older revision is a rollout like any other; a convergence changes nothing.
  d = desired_after(ended_state(rollout::Phase::kSucceeded, {"v3"}), "rollback", before, 5);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->version, "v2");
  EXPECT_FALSE(desired_after(ended_state(rollout::Phase::kSucceeded, {"v1"}), "converge", before, 5));
}

TEST(DesiredState, ConvergencePlanIsOneHostFirstNoBudgetNoRollback) {
  auto p = rollout::Plan::from_json(convergence_plan(
      {{"batches", {"10%"}}, {"pause_after", {0}}, {"min_healthy_time", "5s"}, {"max_failures", "50%"}}));
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->batches.size(), 2u);
  EXPECT_TRUE(p->pause_after.empty());
  EXPECT_EQ(p->min_healthy_ms, 5000);
  EXPECT_EQ(p->max_failures.value, 0u);
  EXPECT_FALSE(p->auto_rollback);
}

class ConvergenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store = testing::open_store(dir.path + "/coordinator.db");
    ASSERT_TRUE(store);
    testing::put_release(*store, "web", "v1");
    testing::put_release(*store, "web", "v2");
  }
  // The desired state as a finished rollout would have stored it, then a (re)started executor.
  void with_desired(const std::string& version, const std::string& converge, bool held = false) {
    auto d = desired_row(version);
    d.converge = converge;
    d.held = held;
    ASSERT_TRUE(store->put_desired(d).ok());
    exec = std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
    ASSERT_TRUE(exec->restore().ok());
    conv = std::make_unique<Convergence>(*exec, *store, registry, clock);
  }
  void hello(const std::string& host, const std::string& running, const std::string& role = "web",
             const std::string& state = "idle") {
    proto::Hello h;
    h.host_id = host;
    h.labels = {{"role", role}};
    h.services.push_back({"web", running, "", state, state == "idle" ? "" : "o-9"});
    registry.on_hello(h, "id-" + host, clock.now_ms(), clock.wall_ms());
  }
  void tick() {
    clock.advance(Convergence::kEveryMs);
    conv->tick();
  }

  TempDir dir;
  std::unique_ptr<store::Store> store;
  FakeClock clock;
  FakeOrders orders;
  FakeSignals signals;
  Metrics metrics;
  ChangeFlag changed;
  fleet::Registry registry;
  std::unique_ptr<RolloutExecutor> exec;
  std::unique_ptr<Convergence> conv;
};

TEST_F(ConvergenceTest, DriftIsAnOnlineIdleHostTheSelectorNamesOnAnotherRelease) {
  with_desired("v2", "report");
  hello("web-1", "v2");
  hello("web-2", "v1");                     // drift
  hello("web-3", "");                       // new, nothing installed: drift
  hello("web-4", "v1", "db");               // not selected
  hello("web-5", "v1", "web", "updating");  // in the middle of an order
  auto drift = find_drift(exec->desired().at("web"), registry);
  ASSERT_EQ(drift.size(), 2u);
  EXPECT_EQ(drift[0].host_id, "web-2");
  EXPECT_EQ(drift[0].running, "v1");
  EXPECT_EQ(drift[0].desired, "v2");
  EXPECT_EQ(drift[1].host_id, "web-3");
  tick();
  EXPECT_EQ(conv->counts().at("web"), 2u);
  nlohmann::json hosts = registry.to_json(clock.wall_ms());
  conv->annotate(hosts);
  for (const auto& h : hosts) {
    const std::string id = h["host_id"];
    EXPECT_EQ(h.value("drift", false), id == "web-2" || id == "web-3") << h.dump();
    if (id == "web-2") {
      EXPECT_EQ(h.value("desired", ""), "v2");
    }
  }
}

// A coordinator that starts (or takes over as leader) restores its hosts from the store, online
// for a grace period, with the versions of their last Hello to whichever coordinator ran then.
// Those are stale after any rollout since: only what an agent said to this coordinator counts.
TEST_F(ConvergenceTest, AHostRestoredFromTheStoreIsNotDriftUntilItSaysHello) {
  with_desired("v2", "auto");
  fleet::HostRecord r;
  r.host_id = "web-1";
  r.identity = "web-1";
  r.labels = {{"role", "web"}};
  r.services["web"].current_version = "v1";  // its last Hello, before the rollout to v2
  r.online = true;
  r.said_hello = false;
  r.last_seen = clock.now_ms();
  registry.restore(std::move(r));
  EXPECT_TRUE(find_drift(exec->desired().at("web"), registry).empty());
  tick();
  EXPECT_TRUE(orders.sent.empty()) << "no repair of a host whose agent has said nothing yet";
  hello("web-1", "v2");
  EXPECT_TRUE(find_drift(exec->desired().at("web"), registry).empty());
  hello("web-1", "v1");  // it really runs v1
  ASSERT_EQ(find_drift(exec->desired().at("web"), registry).size(), 1u);
}

TEST_F(ConvergenceTest, AutoRepairsTheDriftedHostsWithARolloutOfTheirOwn) {
  with_desired("v2", "auto");
  hello("web-1", "v2");
  hello("web-2", "v1");
  tick();
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].host_id, "web-2");
  EXPECT_EQ(sent[0].order.version, "v2");
  EXPECT_EQ(sent[0].order.kind, "update");
  ASSERT_EQ(exec->active().size(), 1u);
  const auto& a = exec->active().begin()->second;
  EXPECT_EQ(a.row.kind, "converge");
  EXPECT_EQ(a.row.created_by, "gantry (converge)");
  EXPECT_NE(a.row.reason.find("web-2 runs v1"), std::string::npos) << a.row.reason;
  // While it runs, nothing more is started and no drift is counted for the service.
  tick();
  EXPECT_TRUE(orders.take().empty());
  // It succeeds: the desired state is unchanged (a convergence does not set it).
  proto::Report r{sent[0].order.order_id, sent[0].order.rollout_id, "web", "succeeded", "v2", "", {}};
  ASSERT_TRUE(exec->queue_report("web-2", r));
  exec->flush_reports();
  EXPECT_TRUE(exec->active().empty());
  EXPECT_EQ(exec->desired().at("web").version, "v2");
  EXPECT_EQ(exec->desired().at("web").rollout_id, 3u);
}

TEST_F(ConvergenceTest, ReportAndHeldOrderNothingAndWriteTheDriftOnce) {
  for (bool held : {false, true}) {
    with_desired("v2", held ? "auto" : "report", held);
    hello("web-2", "v1");
    tick();
    tick();
    EXPECT_TRUE(orders.take().empty());
    EXPECT_TRUE(exec->active().empty());
    auto ev = store->events(3, 0, 100);
    ASSERT_TRUE(ev);
    size_t n = 0;
    for (const auto& e : *ev) n += e.message.find("web-2 drifted: it runs v1, desired v2") != std::string::npos;
    EXPECT_EQ(n, held ? 2u : 1u) << "one line per look-alike drift, not one per look";
  }
}

TEST_F(ConvergenceTest, AFailedRepairIsNotRetriedUntilTheHostReconnects) {
  with_desired("v2", "auto");
  hello("web-2", "v1");
  tick();
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  proto::Report r{sent[0].order.order_id, sent[0].order.rollout_id, "web", "failed_reverted", "v1", "probe", {}};
  ASSERT_TRUE(exec->queue_report("web-2", r));
  exec->flush_reports();
  ASSERT_TRUE(exec->active().empty());
  tick();
  tick();
  EXPECT_TRUE(orders.take().empty()) << "without a new Hello it would fail the same way";
  EXPECT_EQ(conv->counts().at("web"), 1u) << "still drift";
  // Its next Hello (a reconnect; without CURVE under the same routing id) makes it a candidate again.
  hello("web-2", "v1");
  tick();
  auto again = orders.take();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].host_id, "web-2");
}

}  // namespace
}  // namespace gantry::coordinator
