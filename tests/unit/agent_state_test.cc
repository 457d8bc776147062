#include <gtest/gtest.h>
#include <unistd.h>

#include "agent/state/state_store.h"
#include "agent_test_util.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

AgentState sample() {
  AgentState s;
  s.services["web"] = {"v2", "v1"};
  ActiveOrder a;
  a.order = {"o-3", 7, "web", "update", "v3", std::string(64, 'a'), 1234, 500, 9000};
  a.phase = phase::kVerifying;
  a.from_version = "v2";
  a.started_wall_ms = 1700000000000;
  a.timings_ms = {{"fetch", 10}, {"stage", 20}};
  s.active = a;
  s.queue.push_back({"o-4", 8, "web", "rollback", "v1", std::string(64, 'b'), 99, 0, 0});
  s.add_result({"o-2", 7, "web", "succeeded", "v2", "ok", {{"total", 42}}});
  return s;
}

}  // namespace

TEST(AgentState, SerializeRoundTrip) {
  AgentState s = sample();
  auto back = parse_state(serialize_state(s));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->services.at("web").current, "v2");
  EXPECT_EQ(back->services.at("web").previous, "v1");
  ASSERT_TRUE(back->active.has_value());
  EXPECT_EQ(back->active->order.order_id, "o-3");
  EXPECT_EQ(back->active->order.healthy_deadline_ms, 9000u);
  EXPECT_EQ(back->active->phase, "verifying");
  EXPECT_EQ(back->active->timings_ms.at("stage"), 20u);
  ASSERT_EQ(back->queue.size(), 1u);
  EXPECT_EQ(back->queue[0].kind, "rollback");
  ASSERT_NE(back->find_result("o-2"), nullptr);
  EXPECT_EQ(back->find_result("o-2")->timings_ms.at("total"), 42u);
  EXPECT_EQ(serialize_state(*back), serialize_state(s));
}

TEST(AgentState, RejectsCorruptOrHostileJournal) {
  EXPECT_FALSE(parse_state("{not json").ok());
  EXPECT_FALSE(parse_state("{}").ok());
  std::string text = serialize_state(sample());
  auto pos = text.find("\"v3\"");
  ASSERT_NE(pos, std::string::npos);
  std::string hostile = text.substr(0, pos) + "\"../../etc\"" + text.substr(pos + 4);
  auto r = parse_state(hostile);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "corrupt");
}

TEST(AgentState, KeepsOnlyTheLastResults) {
  AgentState s;
  for (int i = 0; i < 300; ++i) s.add_result({"o-" + std::to_string(i), 1, "web", "succeeded", "v1", "", {}});
  EXPECT_EQ(s.results.size(), AgentState::kMaxResults);
  EXPECT_EQ(s.find_result("o-0"), nullptr);
  EXPECT_NE(s.find_result("o-299"), nullptr);
}

TEST(AgentState, FileStoreRoundTripAndEmptyStart) {
  TempDir t;
  FileStateStore store(t / "state");
  auto empty = store.load();
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->active.has_value());
  ASSERT_TRUE(store.save(sample()).ok());
  auto back = store.load();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->active->order.version, "v3");
  // Nothing but the journal itself is left behind.
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(t / "state")) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1u);
}

TEST(AgentState, FailedWriteLeavesThePreviousJournal) {
  TempDir t;
  FileStateStore store(t / "state");
  AgentState first = sample();
  ASSERT_TRUE(store.save(first).ok());
  // Block the temp file name so the next write fails before the rename (works as root too).
  std::filesystem::create_directories(store.path() + ".tmp." + std::to_string(::getpid()) + "/x");
  AgentState second = sample();
  second.active.reset();
  Status st = store.save(second);
  EXPECT_FALSE(st.ok());
  auto back = store.load();
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->active.has_value()) << "the old journal must still be there";
}

TEST(AgentState, MemoryStoreInjectsFailures) {
  MemoryStateStore m;
  m.fail_next(1);
  Status st = m.save(sample());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "disk_full");
  EXPECT_TRUE(m.save(sample()).ok());
  EXPECT_EQ(m.saves(), 1);
}
