// Rollout decisions run on a monotonic decision clock: a step of the wall clock by an hour
// either way, mid-rollout or while the coordinator is down, times nothing out and holds nothing
// up; records keep wall time. Driven through the real executor with a real SQLite store.
#include "coordinator/server/decision_clock.h"

#include <gtest/gtest.h>

#include "coordinator/server/rollout_executor.h"
#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::FakeOrders;
using testing::FakeSignals;
using testing::TempDir;

constexpr Millis kHour = 3'600'000;

// A clock whose wall time can be stepped on its own, as NTP or `date -s` would.
class SteppedClock final : public Clock {
 public:
  Millis now_ms() const override { return mono_; }
  Millis wall_ms() const override { return 1'700'000'000'000 + mono_ + wall_step_; }
  void advance(Millis d) { mono_ += d; }
  void step_wall(Millis d) { wall_step_ += d; }
  // A new process: its monotonic clock has another origin.
  void new_boot() { mono_ = 7; }

 private:
  Millis mono_ = 1'000'000;
  Millis wall_step_ = 0;
};

TEST(DecisionClock, MovesWithTheMonotonicClockAndNotTheWallClock) {
  SteppedClock clock;
  DecisionClock d(clock);
  const Millis t0 = d.now();
  EXPECT_EQ(t0, clock.wall_ms());  // it starts at wall time
  clock.step_wall(kHour);
  EXPECT_EQ(d.now(), t0);
  clock.step_wall(-2 * kHour);
  EXPECT_EQ(d.now(), t0);
  clock.advance(1500);
  EXPECT_EQ(d.now(), t0 + 1500);
}

TEST(DecisionClock, ResumesFromTheStoredTimeWhenTheWallClockWentBack) {
  SteppedClock clock;
  clock.step_wall(-kHour);
  DecisionClock d(clock);
  const Millis floor = clock.wall_ms() + kHour;  // stored by the previous process
  d.resume_from(floor);
  EXPECT_EQ(d.now(), floor);
  clock.advance(10);
  EXPECT_EQ(d.now(), floor + 10);
  d.resume_from(floor - 5000);  // an older floor changes nothing
  EXPECT_EQ(d.now(), floor + 10);
}

class WallStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store = testing::open_store(dir.path + "/coordinator.db");
    ASSERT_TRUE(store);
    testing::put_release(*store, "web", "v1");
    testing::put_release(*store, "web", "v2");
    exec = std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
  }
  uint64_t start() {
    RolloutExecutor::StartRequest req;
    req.service = "web";
    req.version = "v2";
    // A host ordered 30 s ago without a report is unknown and fails the rollout (budget 0).
    req.plan = {{"batches", {"1", "100%"}}, {"host_timeout", "30s"}, {"max_failures", "0"}};
    req.hosts = testing::hosts(3);
    req.who = "tester";
    auto id = exec->start(std::move(req));
    EXPECT_TRUE(id) << (id ? "" : id.error().message);
    return id ? *id : 0;
  }
  void report_ok(const std::vector<FakeOrders::Sent>& sent) {
    for (const auto& o : sent) {
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
  // As stored (an ended rollout is no longer in the executor's active set).
  rollout::HostState state_of(uint64_t id, const std::string& host) {
    auto row = store->rollout(id);
    EXPECT_TRUE(row && row->has_value());
    if (!row || !row->has_value()) return rollout::HostState::kPending;
    auto st = rollout::State::from_json((*row)->state);
    EXPECT_TRUE(st) << (st ? "" : st.error().message);
    const auto* h = st ? st->find(host) : nullptr;
    return h ? h->state : rollout::HostState::kPending;
  }

  TempDir dir;
  std::unique_ptr<store::Store> store;
  SteppedClock clock;
  FakeOrders orders;
  FakeSignals signals;
  Metrics metrics;
  ChangeFlag changed;
  std::unique_ptr<RolloutExecutor> exec;
};

TEST_F(WallStepTest, AnHourForwardOrBackMidRolloutTimesNothingOutAndHoldsNothingUp) {
  const uint64_t id = start();
  auto first = orders.take();
  ASSERT_EQ(first.size(), 1u);
  clock.step_wall(kHour);  // forward: on the wall clock the order is an hour old
  ASSERT_TRUE(exec->tick().ok());
  EXPECT_EQ(state_of(id, "web-1"), rollout::HostState::kOrdered);
  report_ok(first);
  auto second = orders.take();
  ASSERT_EQ(second.size(), 2u);
  clock.step_wall(-2 * kHour);  // back: on the wall clock the orders are an hour in the future
  clock.advance(31'000);        // but 31 s really passed without a report: they time out now
  ASSERT_TRUE(exec->tick().ok());
  EXPECT_EQ(state_of(id, "web-2"), rollout::HostState::kUnknown);
  auto row = store->rollout(id);
  ASSERT_TRUE(row && row->has_value());
  EXPECT_EQ((*row)->phase, "rolling_back");
  // Records carry the wall time, stepped as it is.
  auto events = store->events(id, 0, 1000);
  ASSERT_TRUE(events);
  ASSERT_FALSE(events->empty());
  EXPECT_EQ(events->back().at, clock.wall_ms());
}

TEST_F(WallStepTest, AWallClockSteppedBackWhileTheCoordinatorWasDownAddsNoHour) {
  const uint64_t id = start();
  ASSERT_EQ(orders.take().size(), 1u);
  clock.advance(20'000);
  // The coordinator restarts with the wall clock an hour behind and a new monotonic origin.
  exec.reset();
  clock.step_wall(-kHour);
  clock.new_boot();
  exec = std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
  ASSERT_TRUE(exec->restore().ok());
  ASSERT_EQ(state_of(id, "web-1"), rollout::HostState::kOrdered);
  // Decision time resumes at the latest stored one (the order): the time since then cannot be
  // measured across a restart whose wall clock went back, so it is not counted, and the hour
  // the wall clock lost is not added either: the order times out 30 s on, not an hour on.
  clock.advance(29'000);
  ASSERT_TRUE(exec->tick().ok());
  EXPECT_EQ(state_of(id, "web-1"), rollout::HostState::kOrdered);
  clock.advance(2'000);
  ASSERT_TRUE(exec->tick().ok());
  EXPECT_EQ(state_of(id, "web-1"), rollout::HostState::kUnknown);
}

}  // namespace
}  // namespace gantry::coordinator
