// One test per decision rule of the rollout state machine, with a fake clock.
#include <set>

#include <gtest/gtest.h>

#include "coordinator/rollout/state_machine.h"
#include "rollout_test_util.h"

using namespace gantry;
using namespace gantry::rollout;
using namespace gantry::rollout::testing;
using V = std::vector<std::string>;

namespace {
Plan plan_122() {
  Plan p;
  p.batches = ramp({"1", "2", "2"});
  return p;
}
}  // namespace

TEST(RolloutMachine, SuccessPathInBatchesOf122) {
  Driver d;
  d.start(plan_122(), make_hosts(5));
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  EXPECT_EQ(d.s.batches.size(), 3u);
  EXPECT_EQ(d.ordered(), V{"web-1"});
  EXPECT_EQ(d.orders()[0].order_id, "r7-1");
  EXPECT_EQ(d.orders()[0].version, "v2");
  EXPECT_TRUE(d.recorded("batch 1 of 3: ordered web-1"));
  EXPECT_TRUE(d.recorded("5 hosts in 3 batches (1, 2, 2)"));
  EXPECT_EQ(next_deadline(d.s), d.now + d.s.plan.host_timeout_ms);

  d.now += 100;
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.state_of("web-1"), HostState::kHealthy);
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"}));
  EXPECT_TRUE(d.recorded("batch 2 of 3: ordered web-2, web-3"));
  d.report("web-3", Outcome::kSucceeded);
  EXPECT_TRUE(d.ordered().empty()) << "batch 2 still has web-2 in flight";
  d.report("web-2", Outcome::kSucceeded);
  EXPECT_EQ(d.ordered(), (V{"web-4", "web-5"}));
  d.report("web-4", Outcome::kSucceeded);
  d.report("web-5", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kSucceeded);
  EXPECT_EQ(d.finished(), Phase::kSucceeded);
  EXPECT_EQ(d.s.finished_at, d.now);
  EXPECT_EQ(count(d.s).healthy, 5u);
  EXPECT_EQ(next_deadline(d.s), 0);
  std::set<std::string> ids;
  for (const auto& h : d.s.hosts) ids.insert(h.order_id);
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(d.s.next_order_seq, 6u);
}

TEST(RolloutMachine, FailureWithinBudgetContinues) {
  Plan p = plan_122();
  p.max_failures = Amount{false, 1};
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-2", Outcome::kFailedReverted, "probe /health: 500");
  EXPECT_EQ(d.state_of("web-2"), HostState::kFailed);
  EXPECT_EQ(d.s.find("web-2")->message, "probe /health: 500");
  EXPECT_TRUE(d.recorded("web-2 failed and reverted: probe /health: 500; failures 1 of budget 1"));
  d.report("web-3", Outcome::kSucceeded);
  EXPECT_EQ(d.ordered(), (V{"web-4", "web-5"}));
  d.report("web-4", Outcome::kSucceeded);
  d.report("web-5", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kSucceeded);
  EXPECT_EQ(count(d.s).failed, 1u);
  EXPECT_EQ(count(d.s).healthy, 4u);
}

TEST(RolloutMachine, BudgetExceededRollsBackOneAtATimeInReverseOrder) {
  Plan p = plan_122();
  p.max_failures = Amount{false, 1};
  p.rollback_batch_size = 1;
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-3", Outcome::kSucceeded);
  d.report("web-2", Outcome::kSucceeded);
  d.report("web-5", Outcome::kFailed, "exit 1");
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  d.report("web-4", Outcome::kFailedReverted);
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_TRUE(d.s.halted);
  EXPECT_EQ(d.broadcasts(), std::vector<SignalKind>{SignalKind::kRollback});
  EXPECT_TRUE(d.recorded("2 failed or unknown hosts, more than the failure budget of 1"));
  // Updated in the order web-1, web-2, web-3: rolled back web-3, web-2, web-1.
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-3"});
  EXPECT_EQ(d.orders(OrderKind::kRollback)[0].version, "v1");
  d.report("web-3", Outcome::kSucceeded);
  EXPECT_EQ(d.state_of("web-3"), HostState::kRolledBack);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-2"});
  d.report("web-2", Outcome::kSucceeded);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-1"});
  d.report("web-1", Outcome::kFailed, "disk full");
  EXPECT_EQ(d.s.phase, Phase::kRolledBack);
  EXPECT_EQ(d.finished(), Phase::kRolledBack);
  Counts c = count(d.s);
  EXPECT_EQ(c.rolled_back, 2u);
  EXPECT_EQ(c.rollback_failed, 1u);
  EXPECT_EQ(c.failed, 2u);
}

TEST(RolloutMachine, BudgetExceededRollsBackAllAtOnceAndWaitsForHostsInFlight) {
  Plan p = plan_122();  // budget 0
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-2", Outcome::kSucceeded);
  d.report("web-3", Outcome::kSucceeded);
  d.report("web-4", Outcome::kFailed);
  ASSERT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), (V{"web-3", "web-2", "web-1"}));
  EXPECT_TRUE(d.ordered(OrderKind::kUpdate).empty());
  d.report("web-3", Outcome::kSucceeded);
  d.report("web-2", Outcome::kSucceeded);
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kRollingBack) << "web-5 is still in flight";
  d.report("web-5", Outcome::kSucceeded);  // it ends healthy on v2: roll it back too
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-5"});
  d.report("web-5", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kRolledBack);
  EXPECT_EQ(count(d.s).rolled_back, 4u);
}

TEST(RolloutMachine, WithoutAutoRollbackFailsOnceNothingIsInFlight) {
  Plan p = plan_122();
  p.auto_rollback = false;
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-2", Outcome::kFailed);
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  EXPECT_TRUE(d.s.halted);
  EXPECT_TRUE(d.broadcasts().empty());
  EXPECT_EQ(d.state_of("web-4"), HostState::kSkipped);
  EXPECT_TRUE(d.recorded("automatic rollback is off, waiting for 1 host(s) in flight"));
  d.report("web-3", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kFailed);
  EXPECT_EQ(d.finished(), Phase::kFailed);
  EXPECT_TRUE(d.orders().empty());
  Counts c = count(d.s);
  EXPECT_EQ(c.healthy, 2u);
  EXPECT_EQ(c.failed, 1u);
  EXPECT_EQ(c.skipped, 2u);
  // The operator may still roll back the changed hosts afterwards.
  d.go(EvRollback{});
  ASSERT_TRUE(d.last_error.ok());
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), (V{"web-3", "web-1"}));
}

TEST(RolloutMachine, CanaryPausesUntilPromote) {
  Plan p = plan_122();
  p.pause_after = {0};
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kPaused);
  EXPECT_TRUE(d.s.waiting_promote);
  EXPECT_TRUE(d.ordered().empty());
  EXPECT_TRUE(d.recorded("promote"));
  d.now += 3'600'000;
  d.go(EvTick{});
  EXPECT_TRUE(d.ordered().empty());
  const State before = d.s;
  auto r = d.go(EvResume{});
  ASSERT_FALSE(r.error.ok());
  EXPECT_NE(r.error.error().message.find("promote"), std::string::npos);
  EXPECT_EQ(d.s, before);
  EXPECT_TRUE(r.actions.empty());
  d.go(EvPromote{});
  ASSERT_TRUE(d.last_error.ok());
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  EXPECT_FALSE(d.s.waiting_promote);
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"}));
  EXPECT_FALSE(d.go(EvPromote{}).error.ok());
}

TEST(RolloutMachine, PauseResumeAbort) {
  Driver d;
  d.start(plan_122(), make_hosts(5));
  EXPECT_FALSE(d.go(EvResume{}).error.ok());
  d.go(EvPause{});
  ASSERT_TRUE(d.last_error.ok());
  EXPECT_EQ(d.s.phase, Phase::kPaused);
  EXPECT_FALSE(d.s.waiting_promote);
  EXPECT_FALSE(d.go(EvPause{}).error.ok());
  EXPECT_FALSE(d.go(EvPromote{}).error.ok());
  d.report("web-1", Outcome::kSucceeded);  // results still count while paused
  EXPECT_EQ(d.state_of("web-1"), HostState::kHealthy);
  EXPECT_TRUE(d.ordered().empty());
  d.go(EvResume{});
  ASSERT_TRUE(d.last_error.ok());
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"}));
  d.report("web-2", Outcome::kSucceeded);
  d.go(EvAbort{});
  ASSERT_TRUE(d.last_error.ok());
  EXPECT_EQ(d.s.phase, Phase::kAborted);
  EXPECT_EQ(d.finished(), Phase::kAborted);
  EXPECT_EQ(d.broadcasts(), std::vector<SignalKind>{SignalKind::kAbort});
  EXPECT_TRUE(d.orders().empty());
  EXPECT_EQ(d.state_of("web-3"), HostState::kOrdered) << "hosts are left as they are";
  EXPECT_EQ(d.state_of("web-4"), HostState::kSkipped);
  EXPECT_EQ(d.state_of("web-5"), HostState::kSkipped);
  for (const Event& e : {Event{EvAbort{}}, Event{EvPause{}}, Event{EvResume{}}, Event{EvPromote{}}}) {
    EXPECT_FALSE(d.go(e).error.ok());
  }
  // A late report is still recorded on the host; the phase stays aborted.
  d.report("web-3", Outcome::kSucceeded);
  EXPECT_EQ(d.state_of("web-3"), HostState::kHealthy);
  EXPECT_EQ(d.s.phase, Phase::kAborted);
  EXPECT_FALSE(d.finished().has_value());
  // Rollback is a separate, explicit act.
  d.go(EvRollback{});
  ASSERT_TRUE(d.last_error.ok());
  EXPECT_EQ(d.ordered(OrderKind::kRollback), (V{"web-3", "web-2", "web-1"}));
  EXPECT_EQ(d.broadcasts(), std::vector<SignalKind>{SignalKind::kRollback});
}

TEST(RolloutMachine, RampOfPercentagesOnTwentyHosts) {
  Plan p;
  p.batches = ramp({"1", "10%", "50%", "100%"});
  Driver d;
  d.start(p, make_hosts(20));
  std::vector<size_t> seen;
  while (d.s.phase == Phase::kRunning) {
    auto hosts = d.ordered();
    ASSERT_FALSE(hosts.empty());
    seen.push_back(hosts.size());
    for (const auto& h : hosts) d.report(h, Outcome::kSucceeded);
  }
  EXPECT_EQ(seen, (std::vector<size_t>{1, 2, 10, 7}));
  EXPECT_EQ(d.s.phase, Phase::kSucceeded);
}

TEST(RolloutMachine, DomainsTenHostsThreeZones) {
  Plan p;
  p.batches = ramp({"1", "30%", "100%"});
  p.domain_label = "zone";
  p.max_per_domain = Amount{false, 1};
  Driver d;
  d.start(p, make_hosts(10, {"eu-1", "eu-2", "eu-3", "eu-1"}));
  // eu-1: web-1,4,5,8,9  eu-2: web-2,6,10  eu-3: web-3,7
  const std::vector<V> want = {
      {"web-1"}, {"web-4", "web-2", "web-3"}, {"web-5", "web-6", "web-7"}, {"web-8", "web-10"}, {"web-9"}};
  ASSERT_EQ(d.s.batches, want);
  for (size_t b = 0; b < want.size(); ++b) {
    ASSERT_EQ(d.ordered(), want[b]) << "batch " << b;
    std::set<std::string> zones;
    for (const auto& h : d.ordered()) {
      EXPECT_TRUE(zones.insert(d.s.find(h)->domain).second) << "two hosts of one zone in batch " << b;
    }
    for (const auto& h : want[b]) d.report(h, Outcome::kSucceeded);
  }
  EXPECT_EQ(d.s.phase, Phase::kSucceeded);
}

TEST(RolloutMachine, UnknownHostsFailCountAtOnce) {
  Plan p = plan_122();
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  d.now += 10;
  d.go(EvHostLost{"web-2"});
  EXPECT_EQ(d.state_of("web-2"), HostState::kUnknown);
  EXPECT_TRUE(d.s.find("web-2")->unknown_counts);
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-1"});
  EXPECT_EQ(count(d.s).unknown, 1u);
  EXPECT_EQ(count(d.s).failed, 0u) << "unknown is kept apart from failed";
}

TEST(RolloutMachine, UnknownHostsWaitThenCount) {
  Plan p = plan_122();
  p.unknown_hosts = UnknownHosts::kWait;
  p.unknown_wait_ms = 30'000;
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  const Millis lost = d.now += 10;
  d.go(EvHostLost{"web-2"});
  EXPECT_EQ(d.state_of("web-2"), HostState::kUnknown);
  EXPECT_FALSE(d.s.find("web-2")->unknown_counts);
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  EXPECT_EQ(next_deadline(d.s), lost + 30'000);
  d.report("web-3", Outcome::kSucceeded);
  EXPECT_TRUE(d.ordered().empty()) << "batch waits for the unknown host";
  // It comes back in time: in flight again, and its report counts normally.
  d.tick_to(lost + 29'999);
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  d.go(EvHostBack{"web-2", "v1"});
  EXPECT_EQ(d.state_of("web-2"), HostState::kOrdered);
  d.report("web-2", Outcome::kSucceeded);
  EXPECT_EQ(d.ordered(), (V{"web-4", "web-5"}));
  // Now one does not come back: it counts when the wait ends.
  const Millis lost2 = d.now += 10;
  d.go(EvHostLost{"web-5"});
  d.tick_to(lost2 + 29'999);
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  d.tick_to(lost2 + 30'000);
  EXPECT_TRUE(d.s.find("web-5")->unknown_counts);
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_TRUE(d.recorded("web-5 still unreachable after 30s; it counts as failed"));
}

TEST(RolloutMachine, HostTimeoutMakesAHostUnknownAndCountsIt) {
  Plan p = plan_122();
  p.host_timeout_ms = 60'000;
  p.unknown_hosts = UnknownHosts::kWait;  // a timeout counts regardless
  p.max_failures = Amount{false, 1};
  Driver d;
  const Millis t0 = d.now;
  d.start(p, make_hosts(5));
  EXPECT_EQ(next_deadline(d.s), t0 + 60'000);
  d.tick_to(t0 + 59'999);
  EXPECT_EQ(d.state_of("web-1"), HostState::kOrdered);
  d.tick_to(t0 + 60'000);
  EXPECT_EQ(d.state_of("web-1"), HostState::kUnknown);
  EXPECT_TRUE(d.s.find("web-1")->unknown_counts);
  EXPECT_TRUE(d.recorded("web-1 sent no report within 1m"));
  // Within budget 1: the batch is done, the next one goes.
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"}));
  // The lost host's late report is applied: it is healthy after all.
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.state_of("web-1"), HostState::kHealthy);
  // Both of batch 2 time out: 2 > 1, stop and roll back what is healthy.
  d.tick_to(d.now + 60'000);
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-1"});
  // A rollback that never answers times out as rollback-failed, and the rollback ends.
  d.tick_to(d.now + 60'000);
  EXPECT_EQ(d.state_of("web-1"), HostState::kRollbackFailed);
  EXPECT_EQ(d.s.phase, Phase::kRolledBack);
}

TEST(RolloutMachine, ProgressDeadlineStopsTheRollout) {
  Plan p = plan_122();
  p.progress_deadline_ms = 600'000;
  p.pause_after = {0};
  p.auto_rollback = false;
  Driver d;
  const Millis t0 = d.now;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  ASSERT_TRUE(d.s.waiting_promote);
  EXPECT_EQ(next_deadline(d.s), t0 + 600'000);
  d.tick_to(t0 + 600'000);
  EXPECT_EQ(d.s.phase, Phase::kFailed);
  EXPECT_NE(d.s.end_reason.find("progress deadline"), std::string::npos);
  EXPECT_EQ(count(d.s).skipped, 4u);
  // With automatic rollback it rolls back instead.
  p.auto_rollback = true;
  Driver r;
  r.start(p, make_hosts(5));
  r.report("web-1", Outcome::kSucceeded);
  r.tick_to(r.s.started_at + 600'000);
  EXPECT_EQ(r.s.phase, Phase::kRollingBack);
  EXPECT_EQ(r.ordered(OrderKind::kRollback), V{"web-1"});
}

TEST(RolloutMachine, BatchDelayWaitsForTheTick) {
  Plan p = plan_122();
  p.batch_delay_ms = 5'000;
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_TRUE(d.ordered().empty());
  EXPECT_EQ(d.s.next_batch_at, d.now + 5'000);
  EXPECT_EQ(next_deadline(d.s), d.now + 5'000);
  const Millis at = d.s.next_batch_at;
  d.tick_to(at - 1);
  EXPECT_TRUE(d.ordered().empty());
  d.tick_to(at);
  EXPECT_EQ(d.ordered(), (V{"web-2", "web-3"}));
}

TEST(RolloutMachine, PerBatchBudget) {
  Plan p;
  p.batches = ramp({"2", "4"});
  p.max_failures = Amount{true, 100};
  p.max_failures_per_batch = Amount{false, 0};
  Driver d;
  d.start(p, make_hosts(6));
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-2", Outcome::kFailed);
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_NE(d.s.end_reason.find("batch 1 of 2"), std::string::npos);
}

TEST(RolloutMachine, StaleDuplicateAndForeignReportsAreIgnored) {
  Plan p = plan_122();
  p.max_failures = Amount{false, 1};
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-2", Outcome::kFailed);
  const State before = d.s;
  // Duplicate of web-2's failure: not counted twice (a second failure would exceed the budget).
  auto r = d.go(EvReport{"web-2", before.find("web-2")->order_id, Outcome::kFailed, "v1", ""});
  EXPECT_TRUE(r.error.ok());
  EXPECT_EQ(d.s, before);
  EXPECT_TRUE(d.recorded("duplicate report from web-2"));
  // A report for an order this host never had.
  d.go(EvReport{"web-3", "r7-999", Outcome::kFailed, "v1", ""});
  EXPECT_EQ(d.s, before);
  EXPECT_TRUE(d.recorded("stale report from web-3 for order r7-999"));
  // A host outside the rollout.
  d.go(EvReport{"db-1", "r7-1", Outcome::kSucceeded, "v2", ""});
  EXPECT_EQ(d.s, before);
  EXPECT_EQ(d.s.phase, Phase::kRunning);
  // After rollback starts, an old update report for a rolling-back host is stale.
  d.report("web-3", Outcome::kFailed);
  ASSERT_EQ(d.s.phase, Phase::kRollingBack);
  const State rb = d.s;
  d.go(EvReport{"web-1", "r7-1", Outcome::kSucceeded, "v2", ""});
  EXPECT_EQ(d.s, rb);
  EXPECT_EQ(d.state_of("web-1"), HostState::kRollingBack);
}

TEST(RolloutMachine, InvalidEventsLeaveTheStateUnchanged) {
  Driver d;
  d.start(plan_122(), make_hosts(1));
  d.report("web-1", Outcome::kSucceeded);
  ASSERT_EQ(d.s.phase, Phase::kSucceeded);
  const State done = d.s;
  for (const Event& e : {Event{EvPause{}}, Event{EvResume{}}, Event{EvPromote{}}, Event{EvAbort{}}, Event{EvRollback{}},
                         Event{EvStart{8, "web", "v3", Plan{}, make_hosts(2)}}}) {
    auto r = d.go(e);
    EXPECT_FALSE(r.error.ok());
    EXPECT_TRUE(r.actions.empty());
    EXPECT_EQ(r.state, done);
  }
  // Start errors are reported, not thrown.
  auto bad = step(State{}, EvStart{1, "web", "v2", Plan{}, {}}, 0);
  EXPECT_FALSE(bad.error.ok());
  auto nov = step(State{}, EvStart{1, "web", "", Plan{}, make_hosts(1)}, 0);
  EXPECT_FALSE(nov.error.ok());
  EXPECT_FALSE(step(State{}, EvRollback{}, 0).error.ok());
}

TEST(RolloutMachine, OfflineHostIsOrderedAnywayAndStartsUnknown) {
  auto hosts = make_hosts(3);
  hosts[0].online = false;
  Plan p;
  p.batches = ramp({"1"});
  p.unknown_hosts = UnknownHosts::kWait;
  p.unknown_wait_ms = 10'000;
  Driver d;
  d.start(p, hosts);
  EXPECT_EQ(d.ordered(), V{"web-1"});
  EXPECT_EQ(d.state_of("web-1"), HostState::kUnknown);
  EXPECT_FALSE(d.s.find("web-1")->unknown_counts);
  d.go(EvHostBack{"web-1", "v1"});
  EXPECT_EQ(d.state_of("web-1"), HostState::kOrdered);
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.ordered(), V{"web-2"});
}

TEST(RolloutMachine, HostBackDuringRollbackOnTargetIsRolledBack) {
  Plan p;
  p.batches = ramp({"2", "2"});
  Driver d;
  d.start(p, make_hosts(4));
  d.report("web-1", Outcome::kSucceeded);
  d.go(EvHostLost{"web-2"});  // counts at once: budget 0 exceeded
  ASSERT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-1"});
  d.report("web-1", Outcome::kSucceeded);
  EXPECT_EQ(d.s.phase, Phase::kRolledBack) << "a counted unknown host does not hold the rollback";
  // Reconnecting after the end changes only its reachability.
  d.go(EvHostBack{"web-2", "v2"});
  EXPECT_EQ(d.state_of("web-2"), HostState::kUnknown);

  Driver e;
  e.start(p, make_hosts(4));
  e.go(EvHostLost{"web-2"});
  ASSERT_EQ(e.s.phase, Phase::kRollingBack);
  EXPECT_EQ(e.state_of("web-1"), HostState::kOrdered);  // in flight: wait for it
  e.go(EvHostBack{"web-2", "v2"});                      // it did install v2
  EXPECT_EQ(e.ordered(OrderKind::kRollback), V{"web-2"});
  e.report("web-2", Outcome::kSucceeded);
  e.report("web-1", Outcome::kFailedReverted);
  EXPECT_EQ(e.s.phase, Phase::kRolledBack);
  EXPECT_EQ(e.state_of("web-2"), HostState::kRolledBack);
}

TEST(RolloutMachine, HostWithoutPreviousReleaseCannotBeRolledBack) {
  auto hosts = make_hosts(3);
  hosts[0].running_version = "";
  Plan p;
  p.batches = ramp({"2", "1"});
  Driver d;
  d.start(p, hosts);
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-2", Outcome::kFailed);
  EXPECT_EQ(d.state_of("web-1"), HostState::kRollbackFailed);
  EXPECT_NE(d.s.find("web-1")->message.find("no previous release"), std::string::npos);
  EXPECT_EQ(d.s.phase, Phase::kRolledBack);
  EXPECT_TRUE(d.orders().empty());
}

TEST(RolloutMachine, StateJsonRoundTripMidRollout) {
  Plan p = plan_122();
  p.pause_after = {1};
  p.unknown_hosts = UnknownHosts::kWait;
  p.max_failures = Amount{true, 40};
  p.domain_label = "zone";
  Driver d;
  d.start(p, make_hosts(5, {"a", "b"}));
  d.report("web-1", Outcome::kSucceeded);
  d.go(EvHostLost{"web-2"});
  d.report("web-3", Outcome::kFailedReverted, "probe \"quoted\" \n newline");
  for (const State& s : {d.s, State{}}) {
    auto back = State::from_json(nlohmann::json::parse(s.to_json().dump()));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, s);
    EXPECT_EQ(back->to_json(), s.to_json());
  }
  // The restored state decides exactly as the original would.
  auto restored = *State::from_json(d.s.to_json());
  auto a = step(d.s, EvHostBack{"web-2", "v1"}, d.now + 5);
  auto b = step(restored, EvHostBack{"web-2", "v1"}, d.now + 5);
  EXPECT_EQ(a.state.to_json(), b.state.to_json());
  // Garbage is an error, not a crash.
  EXPECT_FALSE(State::from_json(nlohmann::json::parse(R"({"id": 1})")).ok());
  auto j = d.s.to_json();
  j["phase"] = "exploding";
  EXPECT_FALSE(State::from_json(j).ok());
  j = d.s.to_json();
  j["hosts"][0]["batch"] = 42;
  EXPECT_FALSE(State::from_json(j).ok());
}

// ---- the exact budget: nothing is ordered after the decision to stop ------------------------

TEST(RolloutMachine, ABatchWhoseUnreachableHostsSpendTheBudgetOrdersNoneOfItsOthers) {
  auto hosts = make_hosts(4);
  hosts[2].online = false;  // web-3, in batch 2
  Plan p;
  p.batches = ramp({"1", "100%"});
  p.unknown_hosts = UnknownHosts::kFail;
  Driver d;
  d.start(p, hosts);
  d.report("web-1", Outcome::kSucceeded);
  // Batch 2: web-3 is unreachable and counts at once: 1 > 0. web-2 and web-4 get nothing.
  EXPECT_TRUE(d.ordered(OrderKind::kUpdate).empty());
  EXPECT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_EQ(d.state_of("web-2"), HostState::kSkipped);
  EXPECT_EQ(d.state_of("web-4"), HostState::kSkipped);
  EXPECT_EQ(d.state_of("web-3"), HostState::kUnknown);
  EXPECT_TRUE(d.recorded("withdrew the update orders of web-3")) << ::testing::PrintToString(d.records());
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-1"});
  // web-3 comes back still on v1, never having heard of its order: skipped, nothing resent.
  d.go(EvHostBack{"web-3", "v1", ""});
  EXPECT_EQ(d.state_of("web-3"), HostState::kSkipped);
  EXPECT_TRUE(d.ordered(OrderKind::kUpdate).empty());
}

TEST(RolloutMachine, UpdatesOrderedByAStepThatStopsAreWithdrawn) {
  Plan p;
  p.batches = ramp({"2", "100%"});
  p.max_failures = Amount{false, 1};
  Driver d;
  d.start(p, make_hosts(5));
  d.report("web-2", Outcome::kFailedReverted, "probe failed");  // 1 of budget 1
  ASSERT_EQ(d.s.phase, Phase::kRunning);
  // One pass: web-1's report completes batch 1 (ordering web-3..5), then web-3 is lost, which
  // counts at once: 2 > 1. The orders of batch 2 are withdrawn before anything is sent.
  std::vector<Status> errors;
  StepResult r = step_all(
      d.s, {EvReport{"web-1", d.s.find("web-1")->order_id, Outcome::kSucceeded, "v2", ""}, EvHostLost{"web-3"}}, d.now,
      &errors);
  for (const auto& a : r.actions) {
    if (const auto* o = std::get_if<ActOrder>(&a)) {
      EXPECT_NE(o->kind, OrderKind::kUpdate) << o->host_id;
    }
  }
  EXPECT_TRUE(r.state.halted);
  EXPECT_EQ(r.state.find("web-4")->state, HostState::kSkipped);
  EXPECT_EQ(r.state.find("web-5")->state, HostState::kSkipped);
  EXPECT_TRUE(r.state.find("web-4")->order_id.empty()) << "never ordered";
  EXPECT_EQ(r.state.find("web-3")->state, HostState::kUnknown);
  // The rollback still goes out, to web-1, the one changed host.
  bool rollback_web1 = false;
  for (const auto& a : r.actions) {
    if (const auto* o = std::get_if<ActOrder>(&a))
      rollback_web1 = rollback_web1 || (o->kind == OrderKind::kRollback && o->host_id == "web-1");
  }
  EXPECT_TRUE(rollback_web1);
}

TEST(RolloutMachine, AHostBackDuringTheStopWithoutItsOrderIsSkipped) {
  Plan p;
  p.batches = ramp({"100%"});
  p.unknown_hosts = UnknownHosts::kWait;
  p.unknown_wait_ms = 600'000;
  Driver d;
  d.start(p, make_hosts(4));
  d.go(EvHostLost{"web-3"});  // unknown, not counted yet: in flight
  d.go(EvHostLost{"web-4"});
  d.report("web-1", Outcome::kSucceeded);
  d.report("web-2", Outcome::kFailedReverted);  // 1 > 0: stop, roll back web-1
  ASSERT_EQ(d.s.phase, Phase::kRollingBack);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-1"});
  d.report("web-1", Outcome::kSucceeded);
  ASSERT_EQ(d.s.phase, Phase::kRollingBack) << "web-3 and web-4 are still in flight";
  // web-3 is back on v1 and says it works on nothing: it never started its update, and now
  // never will. Skipped; no order resent.
  const std::string web3_order = d.s.find("web-3")->order_id;
  d.go(EvHostBack{"web-3", "v1", ""});
  EXPECT_EQ(d.state_of("web-3"), HostState::kSkipped);
  EXPECT_TRUE(d.recorded("without having started " + web3_order)) << ::testing::PrintToString(d.records());
  // web-4 is back working on its order (it started before the stop): in flight again, and
  // rolled back once it reports success.
  d.go(EvHostBack{"web-4", "v1", d.s.find("web-4")->order_id});
  EXPECT_EQ(d.state_of("web-4"), HostState::kOrdered);
  d.report("web-4", Outcome::kSucceeded);
  EXPECT_EQ(d.ordered(OrderKind::kRollback), V{"web-4"});
  d.report("web-4", Outcome::kSucceeded);
  // A late report of web-3's withdrawn order (it ran it after all) is applied, after the end.
  ASSERT_EQ(d.s.phase, Phase::kRolledBack);
  d.go(EvReport{"web-3", web3_order, Outcome::kSucceeded, "v2", ""});
  EXPECT_EQ(d.state_of("web-3"), HostState::kHealthy);
}
