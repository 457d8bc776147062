// Per-host timelines of a rollout (issue 19): the phases agents report and the results of their
// orders, stored in a real SQLite file (table host_timeline) with the rollout's steps or in a
// lazy transaction of their own, bounded per host, and read back after a restart.
#include "coordinator/server/host_timeline.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "coordinator/server/rollout_executor.h"
#include "coordinator/server/rollout_views.h"
#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::FakeOrders;
using testing::FakeSignals;
using testing::TempDir;

constexpr Millis kWall = 1'700'000'000'000;  // FakeClock's wall time at its monotonic 0

store::TimelineRow row(uint64_t rollout, const std::string& host, uint32_t seq, const std::string& phase, Millis at) {
  return {rollout, host, seq, phase, at, at + 5};
}

uint64_t new_rollout(store::Store& st) {
  store::RolloutRow r;
  r.service = "web";
  r.version = "v2";
  r.phase = "running";
  r.created_by = "test";
  r.state = nlohmann::json::object();
  auto id = st.create_rollout(r);
  EXPECT_TRUE(id);
  return id ? *id : 0;
}

TEST(HostTimelineStore, RowsRideWithAStepAndComeBackByHostInOrderAfterReopening) {
  TempDir dir;
  const std::string path = dir.path + "/coordinator.db";
  uint64_t id = 0;
  {
    auto st = testing::open_store(path);
    ASSERT_TRUE(st);
    id = new_rollout(*st);
    store::StepWrite w;
    w.rollout_id = id;
    w.phase = "running";
    w.state = nlohmann::json::object({{"id", id}});
    w.timeline = {row(id, "web-2", 0, "draining", 1000), row(id, "web-1", 0, "swapping", 2000),
                  row(id, "web-2", 1, "swapping", 1100)};
    auto saved = st->save_step(w);
    ASSERT_TRUE(saved.ok()) << saved.error().message;
    ASSERT_TRUE(st->add_timeline({row(id, "web-1", 1, "healthy", 2500), row(id + 1, "web-1", 0, "draining", 9)}).ok());
  }
  auto st = testing::open_store(path);
  ASSERT_TRUE(st);
  auto rows = st->timeline(id);
  ASSERT_TRUE(rows) << rows.error().message;
  ASSERT_EQ(rows->size(), 4u);  // the other rollout's row is not among them
  EXPECT_EQ((*rows)[0].host_id, "web-1");
  EXPECT_EQ((*rows)[0].phase, "swapping");
  EXPECT_EQ((*rows)[1].phase, "healthy");
  EXPECT_EQ((*rows)[1].at_ms, 2500);
  EXPECT_EQ((*rows)[1].received_ms, 2505);
  EXPECT_EQ((*rows)[2].host_id, "web-2");
  EXPECT_EQ((*rows)[2].phase, "draining");
  EXPECT_EQ((*rows)[3].seq, 1u);
  // The same (rollout, host, seq) again replaces the row (a lazy write lost to a power cut is
  // written again under the same number).
  ASSERT_TRUE(st->add_timeline({row(id, "web-2", 1, "restarting", 1200)}).ok());
  rows = st->timeline(id);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[3].phase, "restarting");
}

TEST(HostTimelineStore, ADatabaseWithoutTheTableGetsItWhenOpened) {
  TempDir dir;
  const std::string path = dir.path + "/coordinator.db";
  { ASSERT_TRUE(testing::open_store(path)); }
  {  // as a coordinator from before the table left it
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DROP TABLE host_timeline", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  auto st = testing::open_store(path);
  ASSERT_TRUE(st);
  ASSERT_TRUE(st->add_timeline({row(1, "web-1", 0, "draining", 1)}).ok());
  auto rows = st->timeline(1);
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->size(), 1u);
}

TEST(HostTimeline, OnlyKnownPhasesAndResultsAreNamed) {
  for (const char* p : {"fetching", "staging", "draining", "waiting_inflight", "swapping", "restarting", "verifying",
                        "reverting", "allowing_traffic", "traffic_allowed", "verifying_traffic", "healthy", "failed"})
    EXPECT_STREQ(timeline_phase(p), p);
  EXPECT_EQ(timeline_phase(""), nullptr);
  EXPECT_EQ(timeline_phase("rm -rf"), nullptr);
  EXPECT_STREQ(result_phase("succeeded"), "healthy");
  EXPECT_STREQ(result_phase("failed_reverted"), "failed");
  EXPECT_STREQ(result_phase("failed"), "failed");
  // Rows with an unknown phase (a corrupt store) are not shown.
  auto t = timelines_from_rows({row(1, "a", 0, "draining", 1), row(1, "a", 1, "bogus", 2)});
  ASSERT_EQ(t["a"].size(), 1u);
  EXPECT_EQ(timeline_json(t["a"]), nlohmann::json::parse(R"([{"phase":"draining","at_ms":1,"received_ms":6}])"));
}

class HostTimelineExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_path = dir.path + "/coordinator.db";
    store = testing::open_store(db_path);
    ASSERT_TRUE(store);
    testing::put_release(*store, "web", "v2");
    exec = make_executor();
  }
  std::unique_ptr<RolloutExecutor> make_executor() {
    return std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
  }
  uint64_t start(int n) {
    RolloutExecutor::StartRequest req;
    req.service = "web";
    req.version = "v2";
    req.plan = {{"batches", {"100%"}}};
    req.hosts = testing::hosts(n);
    req.who = "tester";
    auto id = exec->start(std::move(req));
    EXPECT_TRUE(id) << (id ? "" : id.error().message);
    return id ? *id : 0;
  }
  static proto::Progress progress(const FakeOrders::Sent& o, const std::string& phase, uint64_t at_ms) {
    proto::Progress p;
    p.order_id = o.order.order_id;
    p.phase = phase;
    p.at_ms = at_ms;
    return p;
  }
  nlohmann::json hosts_view(uint64_t id) {
    auto v = rollout_view_by_id(*store, *exec, id, false);
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
    return v ? (*v)["hosts"] : nlohmann::json();
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

TEST_F(HostTimelineExecutorTest, ProgressAndResultsAreRecordedPerHostAndSurviveARestart) {
  clock.set(50000);  // wall 1,700,000,050,000
  const uint64_t id = start(2);
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 2u);
  const auto& a = sent[0];
  const auto& b = sent[1];
  exec->progress(a.host_id, progress(a, "draining", 40000));
  exec->progress(a.host_id, progress(a, "draining", 40000));  // re-sent after a reconnect: once
  exec->progress(a.host_id, progress(a, "swapping", 0));      // no agent time: the receive time
  exec->progress(b.host_id, progress(a, "swapping", 41000));  // not b's order: ignored
  exec->flush_reports();                                      // no step: written lazily
  {
    auto rows = store->timeline(id);
    ASSERT_TRUE(rows);
    ASSERT_EQ(rows->size(), 2u);
    EXPECT_EQ((*rows)[1].phase, "swapping");
    EXPECT_EQ((*rows)[1].at_ms, clock.wall_ms());
  }
  proto::Report r;
  r.order_id = a.order.order_id;
  r.rollout_id = id;
  r.service = "web";
  r.outcome = "succeeded";
  r.running_version = "v2";
  clock.set(52000);
  ASSERT_TRUE(exec->queue_report(a.host_id, r));
  exec->flush_reports();  // the result rides with the step that applies the report

  auto hosts = hosts_view(id);
  ASSERT_EQ(hosts.size(), 2u);
  nlohmann::json tl_a, tl_b;
  for (const auto& h : hosts) (h["host_id"] == a.host_id ? tl_a : tl_b) = h["timeline"];
  ASSERT_EQ(tl_a.size(), 3u) << tl_a.dump();
  EXPECT_EQ(tl_a[0], nlohmann::json({{"phase", "draining"}, {"at_ms", 40000}, {"received_ms", kWall + 50000}}));
  EXPECT_EQ(tl_a[2], nlohmann::json({{"phase", "healthy"}, {"at_ms", kWall + 52000}, {"received_ms", kWall + 52000}}));
  EXPECT_TRUE(tl_b.empty());

  // A new executor over the same file (a coordinator restart) has them, and numbers on.
  exec = make_executor();
  ASSERT_TRUE(exec->restore().ok());
  exec->progress(b.host_id, progress(b, "draining", 45000));
  exec->flush_reports();
  hosts = hosts_view(id);
  for (const auto& h : hosts) {
    if (h["host_id"] == a.host_id) {
      EXPECT_EQ(h["timeline"], tl_a);
    } else {
      EXPECT_EQ(h["timeline"].size(), 1u);
    }
  }
  // Once the rollout ended, the view reads them from the store.
  r.order_id = b.order.order_id;
  ASSERT_TRUE(exec->queue_report(b.host_id, r));
  exec->flush_reports();
  ASSERT_EQ(exec->find(id), nullptr) << "the rollout should have ended";
  hosts = hosts_view(id);
  for (const auto& h : hosts) {
    if (h["host_id"] == a.host_id) {
      EXPECT_EQ(h["timeline"], tl_a);
    } else {
      EXPECT_EQ(h["timeline"].size(), 2u);
    }
  }
}

TEST_F(HostTimelineExecutorTest, AHostsTimelineIsBounded) {
  const uint64_t id = start(1);
  auto sent = orders.take();
  ASSERT_EQ(sent.size(), 1u);
  for (uint64_t i = 0; i < 3 * kTimelineMax; ++i)
    exec->progress(sent[0].host_id, progress(sent[0], i % 2 ? "draining" : "swapping", 1000 + i));
  exec->flush_reports();
  auto rows = store->timeline(id);
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->size(), kTimelineMax);
  EXPECT_EQ(hosts_view(id)[0]["timeline"].size(), kTimelineMax);
}

}  // namespace
}  // namespace gantry::coordinator
