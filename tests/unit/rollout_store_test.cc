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
#include "tests/unit/store_test_util.h"

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
  for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
  ASSERT_TRUE(st.save_step(w).ok());
}

State load(store::Store& st, uint64_t id) {
  auto row = st.rollout(id);
  EXPECT_TRUE(row && row->has_value());
  auto s = State::from_json((*row)->state);
  EXPECT_TRUE(s) << (s ? "" : s.error().message);
  return s ? *s : State{};
}

using gantry::store::testing::new_rollout;

}  // namespace

// A fresh store in a temp dir with one rollout row.
class RolloutStoreWithRow : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = store::Store::open(t.path() + "/c.db");
    ASSERT_TRUE(opened) << opened.error().message;
    st = std::move(*opened);
    id = new_rollout(*st);
  }
  TempDir t;
  std::unique_ptr<store::Store> st;
  uint64_t id = 0;
};

TEST_F(RolloutStoreWithRow, HeaderAndTouchedSlotsRebuildTheWholeState) {
  auto r = step(State{}, EvStart{id, "web", "v2", plan_of({Amount{false, 3}}), make_hosts(9)}, 1000);
  ASSERT_TRUE(r.error.ok());
  EXPECT_EQ(r.touched.size(), 9u);  // a start writes every slot
  save(*st, r);
  EXPECT_EQ(load(*st, id), r.state);

  // One report touches one slot; the batches come back from the slots, not from the header.
  auto r2 = step(r.state, EvReport{"web-2", r.state.find("web-2")->order_id, Outcome::kSucceeded, "v2", ""}, 2000);
  ASSERT_TRUE(r2.error.ok());
  ASSERT_EQ(r2.touched, std::vector<uint32_t>{1});
  save(*st, r2);
  EXPECT_FALSE(r2.state.header_json().contains("batches"));
  const State back = load(*st, id);
  EXPECT_EQ(back, r2.state);
  EXPECT_EQ(back.batches, r2.state.batches);

  // A batch ending orders the next one: the touched slots are the reporter and the new batch.
  State s = r2.state;
  std::vector<Event> evs;
  for (const char* h : {"web-1", "web-3"})
    evs.push_back(EvReport{h, s.find(h)->order_id, Outcome::kSucceeded, "v2", ""});
  std::vector<Status> errs;
  auto r3 = step_all(s, evs, 3000, &errs);
  EXPECT_EQ(r3.touched, (std::vector<uint32_t>{0, 2, 3, 4, 5}));
  save(*st, r3);
  EXPECT_EQ(load(*st, id), r3.state);

  // History reads headers only, and still has what it shows.
  auto rows = st->rollouts("web", false, 10, /*with_hosts=*/false);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_FALSE((*rows)[0].state.contains("hosts"));
  EXPECT_EQ((*rows)[0].state.at("version"), "v2");
}

// A rollback skips every host not ordered yet without writing their slots: the header (halted)
// makes a stored pending slot skipped on load, so the reloaded state is the live one.
TEST_F(RolloutStoreWithRow, RollbackSkipsPendingHostsWithoutWritingTheirSlots) {
  auto r = step(State{}, EvStart{id, "web", "v2", plan_of({Amount{false, 2}}), make_hosts(50)}, 1000);
  ASSERT_TRUE(r.error.ok());
  save(*st, r);
  auto rb = step(r.state, EvRollback{}, 2000);
  ASSERT_TRUE(rb.error.ok());
  size_t skipped = 0;
  for (const auto& h : rb.state.hosts) skipped += h.state == HostState::kSkipped ? 1 : 0;
  EXPECT_EQ(skipped, 48u) << "the 48 hosts not ordered yet are skipped";
  EXPECT_LE(rb.touched.size(), 2u) << "only the 2 ordered hosts' slots are written";
  save(*st, rb);
  EXPECT_EQ(load(*st, id), rb.state);
  // A rollout still running keeps its pending hosts pending when loaded.
  EXPECT_FALSE(r.state.pending_means_skipped());
  EXPECT_EQ(load(*st, id).hosts.back().state, HostState::kSkipped);
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
    ASSERT_EQ(sqlite3_exec(h, "UPDATE meta SET value = '1' WHERE key = 'schema_version'", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(h);
  }
  auto st = store::Store::open(db);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(load(**st, 1), r.state);
  // After the conversion a step writes only what it touched, and the rest is still there.
  auto r2 = step(r.state, EvReport{"web-1", r.state.find("web-1")->order_id, Outcome::kFailed, "v1", "boom"}, 2000);
  save(**st, r2);
  EXPECT_EQ(load(**st, 1), r2.state);
}

TEST(RolloutStore, NewerSchemaIsRefused) {
  TempDir t;
  const std::string db = t.path() + "/c.db";
  { ASSERT_TRUE(store::Store::open(db)); }
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", nullptr, nullptr, nullptr),
            SQLITE_OK);
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

// Slots are written as text straight from the struct; the text must be what the JSON tree
// would have dumped (existing rows and new ones read back alike), escapes included.
TEST(RolloutStore, SlotTextIsTheJsonDump) {
  HostSlot h;
  EXPECT_EQ(h.to_json_text(), h.to_json().dump());
  h.host_id = "web-7";
  h.domain = "rack \"a\"\\b";
  h.from_version = "v1";
  h.state = HostState::kUnknown;
  h.batch = 12;
  h.order_id = "r3-77";
  h.ordered_at = 1700000000123;
  h.lost_at = -5;
  h.update_seq = 18446744073709551615ull;
  h.message = std::string("line1\nline2\ttab\r\b\f") + '\x01' + '\x1f' + '\x7f' + " end";
  h.online = false;
  h.unknown_counts = true;
  h.running_version = "v2";
  EXPECT_EQ(h.to_json_text(), h.to_json().dump());
  h.message = "caf\xc3\xa9 \xe2\x9c\x93";  // UTF-8 goes through nlohmann: same text
  EXPECT_EQ(h.to_json_text(), h.to_json().dump());
  h.message = "bad \xff byte";  // refused the same way as by dump()
  EXPECT_THROW(h.to_json_text(), nlohmann::json::type_error);
  EXPECT_THROW(h.to_json().dump(), nlohmann::json::type_error);
  for (HostState st :
       {HostState::kPending, HostState::kOrdered, HostState::kHealthy, HostState::kFailed, HostState::kRollingBack,
        HostState::kRolledBack, HostState::kRollbackFailed, HostState::kSkipped}) {
    h.state = st;
    h.message.clear();
    EXPECT_EQ(h.to_json_text(), h.to_json().dump());
    auto back = HostSlot::from_json(nlohmann::json::parse(h.to_json_text()));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, h);
  }
}

namespace {
void exec_sql(const std::string& db, const char* sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(h, sql, nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(h);
}

std::string query_text(const std::string& db, const char* sql) {
  sqlite3* h = nullptr;
  EXPECT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  std::string out = "(none)";
  if (sqlite3_prepare_v2(h, sql, -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
    const unsigned char* p = sqlite3_column_text(s, 0);
    out = p ? reinterpret_cast<const char*>(p) : "(null)";
  }
  sqlite3_finalize(s);
  sqlite3_close(h);
  return out;
}
}  // namespace

// Schema 3 keeps an order's result in the order's own row. A version-2 database (orders without
// result columns, a `results` table) is converted when opened: each order gets its last result,
// a result without an order row keeps a closed row of its own, open orders stay open.
TEST(RolloutStore, SchemaTwoResultsMoveIntoTheirOrders) {
  TempDir t;
  const std::string db = t.path() + "/c.db";
  exec_sql(db, R"sql(
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta VALUES ('schema_version', '2');
    CREATE TABLE orders (
      order_id TEXT PRIMARY KEY, rollout_id INTEGER NOT NULL, host_id TEXT NOT NULL,
      body TEXT NOT NULL, acked INTEGER NOT NULL DEFAULT 0, reported INTEGER NOT NULL DEFAULT 0,
      created_at INTEGER NOT NULL);
    CREATE INDEX orders_open ON orders (reported, host_id);
    CREATE TABLE results (
      id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id INTEGER NOT NULL, host_id TEXT NOT NULL,
      order_id TEXT NOT NULL, outcome TEXT NOT NULL, running_version TEXT NOT NULL,
      message TEXT NOT NULL, timings TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE INDEX results_rollout ON results (rollout_id);
    INSERT INTO orders VALUES ('r1-1', 1, 'web-1', '{"order_id":"r1-1"}', 1, 1, 100);
    INSERT INTO orders VALUES ('r1-2', 1, 'web-2', '{"order_id":"r1-2"}', 1, 0, 100);
    INSERT INTO results (rollout_id, host_id, order_id, outcome, running_version, message, timings, at)
      VALUES (1, 'web-1', 'r1-1', 'failed', 'v1', 'first', '{}', 200);
    INSERT INTO results (rollout_id, host_id, order_id, outcome, running_version, message, timings, at)
      VALUES (1, 'web-1', 'r1-1', 'succeeded', 'v2', 'again', '{"swap":3}', 300);
    INSERT INTO results (rollout_id, host_id, order_id, outcome, running_version, message, timings, at)
      VALUES (1, 'web-3', 'r1-3', 'failed_reverted', 'v1', 'no order row', '{}', 250);
  )sql");
  {
    auto st = store::Store::open(db);
    ASSERT_TRUE(st) << st.error().message;
    auto res = (*st)->results(1);
    ASSERT_TRUE(res) << res.error().message;
    ASSERT_EQ(res->size(), 2u);
    EXPECT_EQ((*res)[0].order_id, "r1-3");  // by the time it was recorded
    EXPECT_EQ((*res)[0].outcome, "failed_reverted");
    EXPECT_EQ((*res)[0].message, "no order row");
    EXPECT_EQ((*res)[1].order_id, "r1-1");  // its last result
    EXPECT_EQ((*res)[1].outcome, "succeeded");
    EXPECT_EQ((*res)[1].running_version, "v2");
    EXPECT_EQ((*res)[1].timings, nlohmann::json({{"swap", 3}}));
    EXPECT_EQ((*res)[1].at, 300);
    auto open = (*st)->open_orders();
    ASSERT_TRUE(open);
    ASSERT_EQ(open->size(), 1u);
    EXPECT_EQ((*open)[0].order_id, "r1-2");
    EXPECT_EQ((*open)[0].body, R"({"order_id":"r1-2"})");
    EXPECT_TRUE((*open)[0].acked);

    // The open one is reported the schema-3 way: one row write, and it is no longer open.
    store::StepWrite w;
    w.rollout_id = 1;
    w.phase = "running";
    w.state = nlohmann::json::object();
    w.results.push_back({1, "web-2", "r1-2", "succeeded", "v2", "", nlohmann::json::object(), 400});
    // (no rollout row 1 here: the header update touches nothing)
    ASSERT_TRUE((*st)->save_step(w).ok());
    EXPECT_TRUE((*st)->open_orders()->empty());
    ASSERT_EQ((*st)->results(1)->size(), 3u);
    EXPECT_EQ((*st)->results(1)->back().order_id, "r1-2");
  }
  EXPECT_EQ(query_text(db, "SELECT value FROM meta WHERE key = 'schema_version'"), "3");
  EXPECT_EQ(query_text(db, "SELECT name FROM sqlite_master WHERE name = 'results'"), "(none)");
  // Opened again: nothing to convert, the same results.
  auto st = store::Store::open(db);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ((*st)->results(1)->size(), 3u);
}

// A fresh database: an order written by a step, then its report by a later step.
TEST_F(RolloutStoreWithRow, ReportClosesItsOrderRow) {
  store::StepWrite w;
  w.rollout_id = id;
  w.phase = "running";
  w.state = nlohmann::json::object();
  w.new_orders.push_back({"r1-1", id, "web-1", R"({"order_id":"r1-1"})", false, false, 10});
  ASSERT_TRUE(st->save_step(w).ok());
  ASSERT_EQ(st->open_orders()->size(), 1u);
  EXPECT_TRUE(st->results(id)->empty());
  ASSERT_TRUE(st->mark_acked(std::vector<std::string>{"r1-1"}).ok());
  EXPECT_TRUE(st->open_orders()->front().acked);
  store::StepWrite w2;
  w2.rollout_id = id;
  w2.phase = "running";
  w2.state = nlohmann::json::object();
  w2.results.push_back({id, "web-1", "r1-1", "failed", "v1", "boom", nlohmann::json({{"total", 5}}), 20});
  ASSERT_TRUE(st->save_step(w2).ok());
  EXPECT_TRUE(st->open_orders()->empty());
  auto res = st->results(id);
  ASSERT_EQ(res->size(), 1u);
  EXPECT_EQ((*res)[0].host_id, "web-1");
  EXPECT_EQ((*res)[0].outcome, "failed");
  EXPECT_EQ((*res)[0].message, "boom");
  EXPECT_EQ((*res)[0].timings, nlohmann::json({{"total", 5}}));
  EXPECT_EQ((*res)[0].at, 20);
}
