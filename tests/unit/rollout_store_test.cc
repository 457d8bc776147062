// How a rollout's state reaches the SQLite store and comes back: a header plus one row per host
// slot, only the touched slots rewritten per step, and version-1 databases (whole states)
// converted when opened. A real SQLite database in a temporary directory.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

#include "coordinator/rollout/state_machine.h"
#include "coordinator/store/store.h"
#include "tests/unit/agent_test_util.h"
#include "tests/unit/rollout_test_util.h"

using namespace gantry;
using namespace gantry::rollout;
using gantry::agent::testing::TempDir;
using gantry::rollout::testing::make_hosts;

namespace {

Plan plan_of(std::vector<Amount> batches) {
  Plan p;
  p.batches = std::move(batches);
  p.max_failures = Amount{false, 2};
  return p;
}

// Persists a step as the coordinator does: the header and the touched slots.
void save(store::Store& st, const StepResult& r) {
  store::StepWrite w;
  w.rollout_id = r.state.id;
  w.phase = phase_name(r.state.phase);
  w.state = r.state.header_json();
  for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json());
  ASSERT_TRUE(st.save_step(w).ok());
}

State load(store::Store& st, uint64_t id) {
  auto row = st.rollout(id);
  EXPECT_TRUE(row && row->has_value());
  auto s = State::from_json((*row)->state);
  EXPECT_TRUE(s) << (s ? "" : s.error().message);
  return s ? *s : State{};
}

uint64_t new_rollout(store::Store& st) {
  store::RolloutRow row;
  row.service = "web";
  row.version = "v2";
  row.phase = "running";
  row.created_by = "test";
  row.state = nlohmann::json::object();
  auto id = st.create_rollout(row);
  EXPECT_TRUE(id);
  return *id;
}

}  // namespace

TEST(RolloutStore, HeaderAndTouchedSlotsRebuildTheWholeState) {
  TempDir t;
  auto st = store::Store::open(t.path() + "/c.db");
  ASSERT_TRUE(st);
  const uint64_t id = new_rollout(**st);
  auto r = step(State{}, EvStart{id, "web", "v2", plan_of({Amount{false, 3}}), make_hosts(9)}, 1000);
  ASSERT_TRUE(r.error.ok());
  EXPECT_EQ(r.touched.size(), 9u);  // a start writes every slot
  save(**st, r);
  EXPECT_EQ(load(**st, id), r.state);

  // One report touches one slot; the batches come back from the slots, not from the header.
  auto r2 = step(r.state, EvReport{"web-2", r.state.find("web-2")->order_id, "succeeded", "v2", ""}, 2000);
  ASSERT_TRUE(r2.error.ok());
  ASSERT_EQ(r2.touched, std::vector<uint32_t>{1});
  save(**st, r2);
  EXPECT_FALSE(r2.state.header_json().contains("batches"));
  const State back = load(**st, id);
  EXPECT_EQ(back, r2.state);
  EXPECT_EQ(back.batches, r2.state.batches);

  // A batch ending orders the next one: the touched slots are the reporter and the new batch.
  State s = r2.state;
  std::vector<Event> evs;
  for (const char* h : {"web-1", "web-3"}) evs.push_back(EvReport{h, s.find(h)->order_id, "succeeded", "v2", ""});
  std::vector<Status> errs;
  auto r3 = step_all(s, evs, 3000, &errs);
  EXPECT_EQ(r3.touched, (std::vector<uint32_t>{0, 2, 3, 4, 5}));
  save(**st, r3);
  EXPECT_EQ(load(**st, id), r3.state);

  // History reads headers only, and still has what it shows.
  auto rows = (*st)->rollouts("web", false, 10, /*with_hosts=*/false);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_FALSE((*rows)[0].state.contains("hosts"));
  EXPECT_EQ((*rows)[0].state.at("version"), "v2");
}

TEST(RolloutStore, SchemaOneDatabaseIsConvertedWhenOpened) {
  TempDir t;
  const std::string db = t.path() + "/c.db";
  auto r = step(State{}, EvStart{1, "web", "v2", plan_of({Amount{false, 2}}), make_hosts(5)}, 1000);
  ASSERT_TRUE(r.error.ok());
  {
    // A version-1 database as the previous coordinator left it: the whole state in one column.
    auto st = store::Store::open(db);
    ASSERT_TRUE(st);
    ASSERT_EQ(new_rollout(**st), 1u);
  }
  {
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(h, "UPDATE rollouts SET state = ? WHERE id = 1", -1, &s, nullptr), SQLITE_OK);
    const std::string whole = r.state.to_json().dump();
    sqlite3_bind_text(s, 1, whole.c_str(), -1, SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    ASSERT_EQ(sqlite3_exec(h, "UPDATE meta SET value = '1' WHERE key = 'schema_version'", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(h);
  }
  auto st = store::Store::open(db);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(load(**st, 1), r.state);
  // After the conversion a step writes only what it touched, and the rest is still there.
  auto r2 = step(r.state, EvReport{"web-1", r.state.find("web-1")->order_id, "failed", "v1", "boom"}, 2000);
  save(**st, r2);
  EXPECT_EQ(load(**st, 1), r2.state);
}

TEST(RolloutStore, NewerSchemaIsRefused) {
  TempDir t;
  const std::string db = t.path() + "/c.db";
  { ASSERT_TRUE(store::Store::open(db)); }
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(h);
  auto st = store::Store::open(db);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("newer than this coordinator understands"), std::string::npos);
}

TEST(RolloutStore, HostLookupsUseTheIndexAndSurviveCopies) {
  auto r = step(State{}, EvStart{1, "web", "v2", plan_of({Amount{false, 2}}), make_hosts(50)}, 1000);
  ASSERT_TRUE(r.error.ok());
  State copy = r.state;
  ASSERT_NE(copy.find("web-50"), nullptr);
  EXPECT_EQ(copy.find("web-50"), &copy.hosts[49]);  // the copy's own slot, not the original's
  EXPECT_EQ(copy.find("nope"), nullptr);
  // A host list changed behind the index's back is noticed (tests build states by hand).
  copy.hosts.erase(copy.hosts.begin());
  EXPECT_EQ(copy.find("web-1"), nullptr);
  EXPECT_EQ(copy.find("web-2"), &copy.hosts[0]);
}
