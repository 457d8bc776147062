// The store contract run against both stores: SqliteStore (a real database file) and EtcdStore
// (a real etcd, tests/support/etcd_cluster.h): the same calls give the same answers. Then what
// only the etcd store has: fencing, a 10,000-host step in one transaction, hostile values,
// compaction, etcd's limits.
#include "coordinator/store/etcd_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <set>

#include "common/util/text.h"
#include "coordinator/rollout/state_machine.h"
#include "coordinator/store/sqlite_store.h"
#include "tests/integration/store_reads.h"
#include "tests/support/etcd_cluster.h"
#include "tests/unit/rollout_test_util.h"

namespace gantry {
namespace {

using gantry::testing::EtcdCluster;
using nlohmann::json;
using store::Store;
using store::testing::everything;

std::shared_ptr<etcd::Client> client_of(const EtcdCluster& c) {
  auto cfg = etcd::parse_store_uri(c.uri());
  EXPECT_TRUE(cfg.ok());
  cfg->call_timeout_ms = 10000;  // a 10,000-host step is a few MiB
  auto client = etcd::Client::connect(*cfg);
  EXPECT_TRUE(client.ok()) << client.error().message;
  return std::shared_ptr<etcd::Client>(std::move(*client));
}

std::unique_ptr<store::EtcdStore> open_etcd(std::shared_ptr<etcd::Client> c, const std::string& prefix,
                                            std::optional<store::Fence> fence = std::nullopt) {
  auto s = store::EtcdStore::open(std::move(c), prefix, std::move(fence));
  EXPECT_TRUE(s.ok()) << s.error().message;
  return s.ok() ? std::move(*s) : nullptr;
}

// One etcd member per test process (ctest runs each test in its own process).
EtcdCluster& shared_etcd() {
  static EtcdCluster cluster(1);
  return cluster;
}

std::string fresh_prefix() {
  static std::atomic<int> n{0};
  return "/test" + std::to_string(++n) + "/";
}

// A store of either kind, fresh.
class StoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "etcd") {
      client_ = client_of(shared_etcd());
      prefix_ = fresh_prefix();
      st = open_etcd(client_, prefix_);
    } else {
      auto s = store::SqliteStore::open(dir_.sub("c.db"));
      ASSERT_TRUE(s.ok()) << s.error().message;
      st = std::move(*s);
    }
    ASSERT_NE(st, nullptr);
  }
  // The same store opened again (what a restarted or standby coordinator sees).
  std::unique_ptr<Store> reopen() {
    if (GetParam() == "etcd") return open_etcd(client_, prefix_);
    st.reset();
    auto s = store::SqliteStore::open(dir_.sub("c.db"));
    EXPECT_TRUE(s.ok());
    return std::move(*s);
  }

  gantry::testing::TempDir dir_{"gantry-store-contract"};
  std::shared_ptr<etcd::Client> client_;
  std::string prefix_;
  std::unique_ptr<Store> st;
};

INSTANTIATE_TEST_SUITE_P(BothStores, StoreContract, ::testing::Values("sqlite", "etcd"),
                         [](const auto& info) { return info.param; });

store::RolloutRow rollout_row(const std::string& service, const std::string& phase = "running") {
  store::RolloutRow r;
  r.service = service;
  r.version = "v2";
  r.phase = phase;
  r.created_by = "alice";
  r.reason = "why";
  r.created_at = 100;
  r.state = json::object();
  return r;
}

store::StepWrite step_of(uint64_t id, const std::string& phase = "running") {
  store::StepWrite w;
  w.rollout_id = id;
  w.phase = phase;
  w.state = json{{"service", "web"}};
  return w;
}

// What the executor exits with when a step's state cannot be read back depends on this
// (EX_TEMPFAIL for a shared store out of reach, EX_SOFTWARE otherwise: rollout_executor.cc).
TEST_P(StoreContract, OnlyASharedStoreNotReachedIsOutOfReach) {
  // A store that answered and refused: never out of reach.
  const store::ReleaseRow r{"web", "v1", std::string(64, 'a'), 9, "", 1, "", ""};
  ASSERT_TRUE(st->put_release(r).ok());
  auto again = r;
  again.sha256 = std::string(64, 'b');
  const auto refused = st->put_release(again);
  ASSERT_FALSE(refused.ok());
  EXPECT_FALSE(st->out_of_reach(refused.error())) << refused.error().code;
  // etcd's client reports every call etcd did not answer in time (or refused) with code "etcd".
  EXPECT_EQ(st->out_of_reach(make_error("etcd", "deadline exceeded")), GetParam() == "etcd");
}

TEST_P(StoreContract, HostsAreUpsertedKeepingFirstSeenAndListedById) {
  ASSERT_TRUE(st->put_host({"b/2", json{{"z", "1"}}, json::array(), 10, 11}).ok());
  ASSERT_TRUE(st->put_hosts({{"a~", json::object(), json::array(), 20, 21},
                             {"a_", json::object(), json::array(), 30, 31},
                             {"b/2", json{{"z", "2"}}, json::array({json{{"name", "web"}}}), 40, 41},
                             {"b/2", json{{"z", "3"}}, json::array(), 50, 51}})
                  .ok());
  auto hs = st->hosts();
  ASSERT_TRUE(hs.ok()) << hs.error().message;
  ASSERT_EQ(hs->size(), 3u);
  EXPECT_EQ((*hs)[0].host_id, "a_");
  EXPECT_EQ((*hs)[1].host_id, "a~");
  EXPECT_EQ((*hs)[2].host_id, "b/2");
  EXPECT_EQ((*hs)[2].first_seen, 10);
  EXPECT_EQ((*hs)[2].last_seen, 51);
  EXPECT_EQ((*hs)[2].labels, json({{"z", "3"}}));
  ASSERT_TRUE(st->put_hosts({}).ok());
}

TEST_P(StoreContract, ReleasesAreStoredOnceAndFoundBySha) {
  store::ReleaseRow r{"web", "v1", "aa", 10, "/a/web-v1", 5, "manifest\n", "ff"};
  ASSERT_TRUE(st->put_release(r).ok());
  store::ReleaseRow r2{"web/x", "v1", "aa", 10, "/a/x", 6, "", ""};
  ASSERT_TRUE(st->put_release(r2).ok());
  auto again = st->put_release(r);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "store");
  auto got = st->release("web", "v1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->manifest, "manifest\n");
  EXPECT_EQ((*got)->signature, "ff");
  EXPECT_EQ((*got)->path, "/a/web-v1");
  auto x = st->release("web/x", "v1");
  ASSERT_TRUE(x.ok() && x->has_value());
  EXPECT_EQ((*x)->manifest, "");
  auto by = st->release_by_sha("aa");
  ASSERT_TRUE(by.ok() && by->has_value());
  EXPECT_EQ((*by)->service, "web");  // the first stored
  EXPECT_FALSE(st->release("web", "v9")->has_value());
  EXPECT_FALSE(st->release_by_sha("bb")->has_value());
}

TEST_P(StoreContract, RolloutsAreListedNewestFirstWithFilters) {
  std::vector<uint64_t> ids;
  for (const char* svc : {"web", "api", "web", "db", "web"}) ids.push_back(*st->create_rollout(rollout_row(svc)));
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  // 2 (api) and 4 (db) end; 5 is paused.
  auto end = step_of(2, "succeeded");
  end.finished_at = 200;
  end.assign_revision = true;
  ASSERT_TRUE(st->save_step(end).ok());
  auto end4 = step_of(4, "failed");
  end4.finished_at = 300;
  ASSERT_TRUE(st->save_step(end4).ok());
  ASSERT_TRUE(st->save_step(step_of(5, "paused")).ok());

  auto all = st->rollouts("", false, 100, false);
  ASSERT_TRUE(all.ok()) << all.error().message;
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].id, 5u);
  EXPECT_EQ((*all)[4].id, 1u);
  EXPECT_EQ((*all)[3].revision, 1);  // rollout 2: api's first revision
  EXPECT_EQ((*all)[3].finished_at, 200);
  EXPECT_EQ((*all)[3].phase, "succeeded");
  EXPECT_EQ((*all)[4].created_by, "alice");
  EXPECT_EQ((*all)[4].reason, "why");

  auto web = st->rollouts("web", false, 2, false);
  ASSERT_EQ(web->size(), 2u);
  EXPECT_EQ((*web)[0].id, 5u);
  EXPECT_EQ((*web)[1].id, 3u);

  auto active = st->rollouts("", true, 100, false);
  ASSERT_EQ(active->size(), 3u);
  EXPECT_EQ((*active)[0].id, 5u);
  EXPECT_EQ((*active)[1].id, 3u);
  EXPECT_EQ((*active)[2].id, 1u);
  EXPECT_EQ(st->rollouts("db", true, 100, false)->size(), 0u);
  EXPECT_EQ(st->rollouts("", false, 0, false)->size(), 0u);
  EXPECT_EQ(st->rollouts("", false, -1, false)->size(), 5u);

  // The newest of each service among the 3 most recent (5, 4, 3): web 5, db 4.
  auto latest = st->latest_rollouts("", 3, false);
  ASSERT_EQ(latest->size(), 2u);
  EXPECT_EQ((*latest)[0].id, 5u);
  EXPECT_EQ((*latest)[1].id, 4u);
  auto latest_all = st->latest_rollouts("", 100, false);
  ASSERT_EQ(latest_all->size(), 3u);
  EXPECT_EQ((*latest_all)[2].id, 2u);
  EXPECT_EQ(st->latest_rollouts("api", 100, false)->front().id, 2u);
  EXPECT_FALSE(st->rollout(99)->has_value());
}

TEST_P(StoreContract, RevisionsCountPerService) {
  const uint64_t a = *st->create_rollout(rollout_row("web"));
  const uint64_t b = *st->create_rollout(rollout_row("api"));
  const uint64_t c = *st->create_rollout(rollout_row("web"));
  for (uint64_t id : {a, b, c}) {
    auto w = step_of(id, "succeeded");
    w.finished_at = 10;
    w.assign_revision = true;
    ASSERT_TRUE(st->save_step(w).ok());
  }
  EXPECT_EQ((*st->rollout(a))->revision, 1);
  EXPECT_EQ((*st->rollout(b))->revision, 1);
  EXPECT_EQ((*st->rollout(c))->revision, 2);
}

TEST_P(StoreContract, StepsRebuildTheWholeStateFromHeaderAndSlots) {
  using namespace rollout;
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  // Created, no step yet: the state stays as created (no "hosts" added).
  EXPECT_EQ((*st->rollout(id))->state, json::object());
  Plan plan;
  plan.batches = {Amount{false, 3}};
  plan.max_failures = Amount{false, 2};
  auto r = step(State{}, EvStart{id, "web", "v2", plan, rollout::testing::make_hosts(9), ""}, 1000);
  ASSERT_TRUE(r.error.ok());
  store::StepWrite w;
  w.rollout_id = id;
  w.phase = phase_name(r.state.phase);
  w.state = r.state.header_json();
  for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
  ASSERT_TRUE(st->save_step(w).ok());
  auto back = st->rollout(id);
  ASSERT_TRUE(back.ok() && back->has_value());
  auto s = State::from_json((*back)->state);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(*s, r.state);
  auto headers = st->rollouts("web", false, 10, /*with_hosts=*/false);
  EXPECT_FALSE(headers->front().state.contains("hosts"));
  auto whole = st->rollouts("web", true, 10, /*with_hosts=*/true);
  ASSERT_TRUE(whole->front().state.contains("hosts"));
  EXPECT_EQ(whole->front().state["hosts"].size(), 9u);
  auto latest = st->latest_rollouts("web", 10, /*with_hosts=*/true);
  EXPECT_EQ(latest->front().state["hosts"].size(), 9u);
  auto again = reopen();
  EXPECT_EQ(*State::from_json((*again->rollout(id))->state), r.state);
}

// As tests/unit/rollout_store_test.cc: a rollback skips every host not ordered yet without
// writing their slots; the halted header makes a stored pending slot read back skipped.
TEST_P(StoreContract, RollbackSkipsPendingHostsWithoutWritingTheirSlots) {
  using namespace rollout;
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  Plan plan;
  plan.batches = {Amount{false, 2}};
  auto save = [&](const StepResult& r) {
    store::StepWrite w;
    w.rollout_id = id;
    w.phase = phase_name(r.state.phase);
    w.state = r.state.header_json();
    for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
    ASSERT_TRUE(st->save_step(w).ok());
  };
  auto r = step(State{}, EvStart{id, "web", "v2", plan, rollout::testing::make_hosts(50), ""}, 1000);
  ASSERT_TRUE(r.error.ok());
  save(r);
  auto rb = step(r.state, EvRollback{}, 2000);
  ASSERT_TRUE(rb.error.ok());
  EXPECT_LE(rb.touched.size(), 2u);
  save(rb);
  auto back = State::from_json((*st->rollout(id))->state);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, rb.state);
  EXPECT_EQ(back->hosts.back().state, HostState::kSkipped);
}

TEST_P(StoreContract, OrdersAreOpenUntilReportedOrClosed) {
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  auto w = step_of(id);
  w.new_orders.push_back({"r1-2", id, "h2", R"({"order_id":"r1-2"})", true, true, 20});
  w.new_orders.push_back({"r1-1", id, "h1", R"({"order_id":"r1-1"})", false, false, 20});
  w.new_orders.push_back({"r1-0", id, "h0", "{}", false, false, 30});
  ASSERT_TRUE(st->save_step(w).ok());
  auto open = st->open_orders();
  ASSERT_TRUE(open.ok()) << open.error().message;
  ASSERT_EQ(open->size(), 3u);
  EXPECT_EQ((*open)[0].order_id, "r1-1");  // created_at, then order_id
  EXPECT_EQ((*open)[1].order_id, "r1-2");
  EXPECT_EQ((*open)[2].order_id, "r1-0");
  EXPECT_FALSE((*open)[1].acked);  // a new order is neither acked nor reported, whatever the row said
  EXPECT_FALSE((*open)[1].reported);
  EXPECT_EQ((*open)[1].body, R"({"order_id":"r1-2"})");
  ASSERT_TRUE(st->mark_acked("r1-1").ok());
  ASSERT_TRUE(st->mark_acked(std::vector<std::string>{"r1-0", "nope"}).ok());
  ASSERT_TRUE(st->mark_acked(std::vector<std::string>{}).ok());
  open = st->open_orders();
  EXPECT_TRUE((*open)[0].acked);
  EXPECT_FALSE((*open)[1].acked);
  EXPECT_TRUE((*open)[2].acked);

  // A report closes its order; one for an order never stored is kept with a closed row of its own.
  ASSERT_TRUE(st->record_report({id, "h1", "r1-1", "succeeded", "v2", "ok", json{{"total", 3}}, 50}).ok());
  ASSERT_TRUE(st->record_report({id, "hx", "r9-9", "failed", "v1", "lost", json::object(), 40}).ok());
  open = st->open_orders();
  ASSERT_EQ(open->size(), 2u);
  auto res = st->results(id);
  ASSERT_TRUE(res.ok());
  ASSERT_EQ(res->size(), 2u);
  EXPECT_EQ((*res)[0].order_id, "r9-9");  // by `at`
  EXPECT_EQ((*res)[1].order_id, "r1-1");
  EXPECT_EQ((*res)[1].timings, json({{"total", 3}}));
  EXPECT_EQ((*res)[1].message, "ok");

  // A step's results and acks, then the step that ends the rollout closes the rest.
  auto w2 = step_of(id);
  w2.results.push_back({id, "h2", "r1-2", "succeeded", "v2", "", json::object(), 60});
  w2.acked.push_back("r1-0");
  ASSERT_TRUE(st->save_step(w2).ok());
  ASSERT_EQ(st->open_orders()->size(), 1u);
  auto end = step_of(id, "succeeded");
  end.finished_at = 70;
  end.new_orders.push_back({"r1-3", id, "h3", "{}", false, false, 70});
  ASSERT_TRUE(st->save_step(end).ok());
  EXPECT_TRUE(st->open_orders()->empty());
  EXPECT_EQ(st->results(id)->size(), 3u);

  // close_orders closes one rollout's orders only.
  const uint64_t id2 = *st->create_rollout(rollout_row("api"));
  const uint64_t id3 = *st->create_rollout(rollout_row("db"));
  auto a = step_of(id2);
  a.new_orders.push_back({"r2-1", id2, "h1", "{}", false, false, 80});
  ASSERT_TRUE(st->save_step(a).ok());
  auto b = step_of(id3);
  b.new_orders.push_back({"r3-1", id3, "h1", "{}", false, false, 81});
  ASSERT_TRUE(st->save_step(b).ok());
  ASSERT_TRUE(st->close_orders(id2).ok());
  open = st->open_orders();
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ(open->front().order_id, "r3-1");
}

TEST_P(StoreContract, TimelineRowsReplaceByKeyAndSortByHostThenSeq) {
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  ASSERT_TRUE(
      st->add_timeline({{id, "h2", 0, "fetch", 1, 2}, {id, "h1", 1, "start", 3, 4}, {id, "h1", 0, "fetch", 5, 6}})
          .ok());
  auto w = step_of(id);
  w.timeline.push_back({id, "h1", 1, "healthy", 7, 8});
  ASSERT_TRUE(st->save_step(w).ok());
  ASSERT_TRUE(st->add_timeline({}).ok());
  auto t = st->timeline(id);
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ((*t)[0].host_id, "h1");
  EXPECT_EQ((*t)[0].seq, 0u);
  EXPECT_EQ((*t)[1].phase, "healthy");
  EXPECT_EQ((*t)[1].received_ms, 8);
  EXPECT_EQ((*t)[2].host_id, "h2");
  EXPECT_TRUE(st->timeline(id + 1)->empty());
}

TEST_P(StoreContract, EventsByRolloutAfterAnIdAndTheMostRecent) {
  const uint64_t a = *st->create_rollout(rollout_row("web"));
  const uint64_t b = *st->create_rollout(rollout_row("api"));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(st->add_event({0, a, 10 + i, "a" + std::to_string(i)}).ok());
  ASSERT_TRUE(st->add_event({0, b, 20, "b0"}).ok());
  auto w = step_of(a);
  w.events.push_back({0, a, 30, "a5"});
  w.events.push_back({0, b, 31, "b1"});
  ASSERT_TRUE(st->save_step(w).ok());
  auto ea = st->events(a, 0, 100);
  ASSERT_TRUE(ea.ok());
  ASSERT_EQ(ea->size(), 6u);
  EXPECT_EQ((*ea)[0].id, 1);
  EXPECT_EQ((*ea)[5].message, "a5");
  EXPECT_EQ((*ea)[5].id, 7);
  auto after = st->events(a, 3, 2);
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[0].id, 4);
  EXPECT_EQ((*after)[1].id, 5);
  auto everything = st->events(0, 5, 100);
  ASSERT_EQ(everything->size(), 3u);
  EXPECT_EQ((*everything)[0].message, "b0");
  EXPECT_EQ((*everything)[2].message, "b1");
  EXPECT_EQ(st->events(0, 0, -1)->size(), 8u);
  EXPECT_TRUE(st->events(a, 0, 0)->empty());
  auto recent = st->recent_events(a, 2);
  ASSERT_EQ(recent->size(), 2u);
  EXPECT_EQ((*recent)[0].message, "a4");  // oldest first
  EXPECT_EQ((*recent)[1].message, "a5");
  EXPECT_TRUE(st->recent_events(0, 10)->empty());  // rollout 0: no events of its own
}

TEST_P(StoreContract, EventsWrittenTogetherAreReadFromTheMiddle) {
  // A step's events are one etcd key (etcd_row_groups.h): reads start and stop inside it.
  const uint64_t a = *st->create_rollout(rollout_row("web"));
  auto w = step_of(a);
  for (int i = 0; i < 5; ++i) w.events.push_back({0, a, 10 + i, "s" + std::to_string(i)});
  ASSERT_TRUE(st->save_step(w).ok());
  auto w2 = step_of(a);
  for (int i = 5; i < 8; ++i) w2.events.push_back({0, a, 10 + i, "s" + std::to_string(i)});
  ASSERT_TRUE(st->save_step(w2).ok());
  auto mid = st->events(a, 2, 2);
  ASSERT_TRUE(mid.ok());
  ASSERT_EQ(mid->size(), 2u);
  EXPECT_EQ((*mid)[0].message, "s2");
  EXPECT_EQ((*mid)[1].message, "s3");
  auto across = st->events(a, 4, 3);
  ASSERT_EQ(across->size(), 3u);
  EXPECT_EQ((*across)[0].message, "s4");
  EXPECT_EQ((*across)[2].message, "s6");
  EXPECT_EQ(st->events(a, 7, 100)->size(), 1u);
  EXPECT_TRUE(st->events(a, 8, 100)->empty());
  EXPECT_EQ(st->events(a, -1, -1)->size(), 8u);
  auto recent = st->recent_events(a, 4);
  ASSERT_EQ(recent->size(), 4u);
  EXPECT_EQ((*recent)[0].message, "s4");
  EXPECT_EQ((*recent)[3].message, "s7");
  EXPECT_EQ(st->recent_events(a, -1)->size(), 8u);
}

TEST_P(StoreContract, DesiredStateAuditAndKeys) {
  store::DesiredRow d{"web", "v2", "role=web", "auto", json{{"batches", json::array({"1"})}}, 3, false, "ok", 9};
  ASSERT_TRUE(st->put_desired(d).ok());
  store::DesiredRow d2{"api", "v1", "", "report", json::array(), 4, true, "held", 10};  // a plan not an object
  ASSERT_TRUE(st->put_desired(d2).ok());
  d.version = "v3";
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  auto w = step_of(id, "succeeded");
  w.finished_at = 11;
  w.desired = d;
  w.audit.push_back({0, 12, "alice", "rollout start", "web", "allowed"});
  ASSERT_TRUE(st->save_step(w).ok());
  auto ds = st->desired();
  ASSERT_TRUE(ds.ok());
  ASSERT_EQ(ds->size(), 2u);
  EXPECT_EQ((*ds)[0].service, "api");
  EXPECT_EQ((*ds)[0].plan, json::object());
  EXPECT_TRUE((*ds)[0].held);
  EXPECT_EQ((*ds)[1].version, "v3");
  EXPECT_EQ((*ds)[1].plan, d.plan);

  ASSERT_TRUE(st->audit({0, 13, "bob", "keys accept", "k", "denied"}).ok());
  ASSERT_TRUE(st->audit({0, 14, "carol", "status", "", "allowed"}).ok());
  auto log = st->audit_log(2);
  ASSERT_EQ(log->size(), 2u);
  EXPECT_EQ((*log)[0].who, "carol");  // newest first
  EXPECT_EQ((*log)[0].id, 3);
  EXPECT_EQ((*log)[1].decision, "denied");
  EXPECT_EQ(st->audit_log(-1)->size(), 3u);

  ASSERT_TRUE(st->put_agent_keys({{"K2/+", "h2", "pending", 5, 5, ""}, {"K1", "h1", "accepted", 5, 6, "alice"}}).ok());
  ASSERT_TRUE(st->put_agent_keys({{"K2/+", "h2", "accepted", 5, 7, "bob"}}).ok());
  auto ak = st->agent_keys();
  ASSERT_EQ(ak->size(), 2u);
  EXPECT_EQ((*ak)[0].key, "K1");
  EXPECT_EQ((*ak)[1].state, "accepted");
  EXPECT_EQ((*ak)[1].updated_by, "bob");
  ASSERT_TRUE(
      st->put_operator_keys({{"O2", "zed", "admin", "active", 1, "x"}, {"O1", "amy", "viewer", "active", 1, ""}}).ok());
  auto ok = st->operator_keys();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].name, "amy");
  EXPECT_EQ((*ok)[1].role, "admin");
}

TEST_P(StoreContract, EpochGrowsAndIdsSurviveReopening) {
  auto e1 = st->bump_epoch();
  auto e2 = st->bump_epoch();
  ASSERT_TRUE(e1.ok() && e2.ok());
  EXPECT_EQ(*e1, 1u);
  EXPECT_EQ(*e2, 2u);
  ASSERT_EQ(*st->create_rollout(rollout_row("web")), 1u);
  ASSERT_TRUE(st->add_event({0, 1, 1, "x"}).ok());
  auto again = reopen();
  EXPECT_EQ(*again->bump_epoch(), 3u);
  EXPECT_EQ(*again->create_rollout(rollout_row("web")), 2u);
  ASSERT_TRUE(again->add_event({0, 1, 2, "y"}).ok());
  EXPECT_EQ(again->events(1, 0, 10)->back().id, 2);
}

// A whole rollout driven by the state machine with reports, written to both stores step by
// step as the coordinator writes it: every read answers the same.
TEST(StoreTwins, ARolloutDrivenThroughBothStoresReadsTheSame) {
  using namespace rollout;
  gantry::testing::TempDir dir("gantry-store-twins");
  auto sql = store::SqliteStore::open(dir.sub("c.db"));
  ASSERT_TRUE(sql.ok());
  auto etc = open_etcd(client_of(shared_etcd()), fresh_prefix());
  std::vector<Store*> both = {sql->get(), etc.get()};
  for (Store* s : both) {
    ASSERT_TRUE(
        s->put_hosts({{"web-1", json::object(), json::array(), 1, 2}, {"web-2", json::object(), json::array(), 1, 2}})
            .ok());
    ASSERT_EQ(*s->create_rollout(rollout_row("old", "running")), 1u);
  }
  Plan plan;
  plan.batches = {Amount{false, 2}};
  plan.max_failures = Amount{false, 1};
  State state;
  Millis now = 1000;
  auto apply = [&](const StepResult& r, std::vector<store::ResultRow> results) {
    ASSERT_TRUE(r.error.ok()) << r.error.error().message;
    store::StepWrite w;
    w.rollout_id = 2;
    w.phase = phase_name(r.state.phase);
    w.state = r.state.header_json();
    for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
    for (const auto& a : r.actions) {
      if (auto* o = std::get_if<ActOrder>(&a))
        w.new_orders.push_back({o->order_id, 2, o->host_id, "{}", false, false, now});
    }
    for (const auto& a : r.actions) {
      if (auto* e = std::get_if<ActRecord>(&a)) w.events.push_back({0, 2, now, e->message});
    }
    w.results = std::move(results);
    if (r.state.phase != Phase::kRunning && r.state.phase != Phase::kPaused) {
      w.finished_at = now;
      w.assign_revision = r.state.phase == Phase::kSucceeded;
    }
    w.timeline.push_back({2, "web-1", static_cast<uint32_t>(now % 7), "tick", now, now});
    for (Store* s : both) ASSERT_TRUE(s->save_step(w).ok());
    state = r.state;
  };
  for (Store* s : both) ASSERT_EQ(*s->create_rollout(rollout_row("web")), 2u);
  apply(step(State{}, EvStart{2, "web", "v2", plan, rollout::testing::make_hosts(7), ""}, now), {});
  for (int round = 0; round < 20 && state.phase == Phase::kRunning; ++round) {
    now += 100;
    std::vector<Event> evs;
    std::vector<store::ResultRow> results;
    for (const auto& h : state.hosts) {
      if (h.state != HostState::kOrdered) continue;
      const bool fail = h.host_id == "web-5";
      evs.push_back(EvReport{h.host_id, h.order_id, fail ? Outcome::kFailed : Outcome::kSucceeded, "v2", ""});
      results.push_back({2, h.host_id, h.order_id, fail ? "failed" : "succeeded", "v2", "", json::object(), now});
    }
    for (Store* s : both) ASSERT_TRUE(s->mark_acked(std::vector<std::string>{"r2-1"}).ok());
    std::vector<Status> errs;
    apply(step_all(state, evs, now, &errs), results);
  }
  for (Store* s : both) {
    ASSERT_TRUE(s->audit({0, 5, "alice", "rollout start", "web", "allowed"}).ok());
    ASSERT_TRUE(s->put_desired({"web", "v2", "", "auto", json::object(), 2, false, "done", 9}).ok());
    ASSERT_TRUE(s->put_agent_keys({{"K", "web-1", "accepted", 1, 1, "a"}}).ok());
    ASSERT_TRUE(s->put_operator_keys({{"O", "amy", "admin", "active", 1, ""}}).ok());
  }
  const json a = everything(*both[0]);
  const json b = everything(*both[1]);
  EXPECT_EQ(a, b) << "sqlite: " << a.dump(1) << "\netcd: " << b.dump(1);
  EXPECT_FALSE(a["results"].empty());
  EXPECT_FALSE(a["events"].empty());
}

// --- etcd only -------------------------------------------------------------------------------

// The number of keys under a prefix and etcd's revision.
std::pair<size_t, int64_t> census(etcd::Client& c, const std::string& prefix) {
  auto r = c.range(prefix, etcd::prefix_end(prefix), 0, true);
  EXPECT_TRUE(r.ok());
  return {r->kvs.size(), r->revision};
}

TEST(EtcdStore, AFencedStoreWritesNothingOnceDeposed) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto won = client->txn({}, {etcd::Op::put(p + "leader", R"({"name":"a"})")});
  ASSERT_TRUE(won.ok());
  auto st = open_etcd(client, p, store::Fence{p + "leader", won->revision});
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(*st->bump_epoch(), static_cast<uint64_t>(won->revision));
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  ASSERT_TRUE(st->add_event({0, id, 1, "first"}).ok());
  auto first = step_of(id);
  first.new_orders.push_back({"r1-0", id, "h", "{}", false, false, 1});
  ASSERT_TRUE(st->save_step(first).ok());

  // Another coordinator wins: the key is deleted and created again (a new creation revision).
  ASSERT_TRUE(client->txn({}, {etcd::Op::del(p + "leader")}).ok());
  ASSERT_TRUE(client->txn({}, {etcd::Op::put(p + "leader", R"({"name":"b"})")}).ok());
  const auto before = census(*client, p);

  std::vector<Status> writes;
  writes.push_back(st->add_event({0, id, 2, "second"}));
  auto w = step_of(id);
  w.new_orders.push_back({"r1-1", id, "h", "{}", false, false, 1});
  w.events.push_back({0, id, 3, "ordered"});
  writes.push_back(st->save_step(w));
  writes.push_back(st->put_hosts({{"h", json::object(), json::array(), 1, 1}}));
  writes.push_back(st->audit({0, 1, "x", "y", "z", "allowed"}));
  writes.push_back(st->put_desired({"web", "v2", "", "auto", json::object(), id, false, "", 1}));
  writes.push_back(st->close_orders(id));
  auto created = st->create_rollout(rollout_row("web"));
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.error().code, "deposed");
  for (const auto& s : writes) {
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, "deposed") << s.error().message;
  }
  auto epoch = st->bump_epoch();
  ASSERT_FALSE(epoch.ok());
  EXPECT_EQ(epoch.error().code, "deposed");
  ASSERT_GT(st->wal_backlog(), 0);
  auto compacted = st->checkpoint();  // no compaction either: its marker write is fenced
  ASSERT_FALSE(compacted.ok());
  EXPECT_EQ(compacted.error().code, "deposed");
  EXPECT_EQ(st->checkpoints(), 0u);
  EXPECT_EQ(census(*client, p), before) << "nothing written, not even the id counters";
  EXPECT_EQ(st->events(id, 0, 10)->size(), 1u);

  // The new leader's store goes on from the ids that were written.
  auto lead = client->range(p + "leader");
  auto st2 = open_etcd(client, p, store::Fence{p + "leader", lead->kvs.at(0).create_revision});
  ASSERT_EQ(*st2->create_rollout(rollout_row("web")), id + 1);
  ASSERT_TRUE(st2->add_event({0, id, 4, "new leader"}).ok());
  EXPECT_EQ(st2->events(id, 0, 10)->back().id, 2);
}

// A write whose first try etcd applied but whose answer was lost is sent again by the client:
// the token it left in meta/write says it is done, and it is not applied twice.
TEST(EtcdStore, AWriteSentTwiceIsAppliedOnce) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  store::etcd_keys::Layout k{p};
  store::EtcdBatch b;
  b.put(p + "x", "1");
  const store::WriteGuard g{k.write_guard(), 0, "token-1"};
  auto first = b.commit(*client, std::nullopt, g, "test");
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto again = b.commit(*client, std::nullopt, g, "test");  // the same call's second try
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(census(*client, p).second, *first) << "nothing written by the second try";
  // A stale try of an older write (its guard revision passed) changes nothing.
  store::EtcdBatch stale;
  stale.put(p + "x", "old");
  auto late = stale.commit(*client, std::nullopt, store::WriteGuard{k.write_guard(), 0, "token-0"}, "test");
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, "conflict");
  EXPECT_EQ(client->range(p + "x")->kvs.at(0).value, "1");
}

// Two stores writing one prefix (a mistake fencing prevents): the one that did not write last
// is refused ("conflict"), writes nothing, and reads the ids again before its next write.
TEST(EtcdStore, AnotherWriterInBetweenIsAConflict) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto a = open_etcd(client, p);
  auto b = open_etcd(client, p);
  ASSERT_TRUE(a->add_event({0, 1, 1, "a1"}).ok());
  auto s = b->add_event({0, 1, 2, "b1"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, "conflict");
  ASSERT_TRUE(b->add_event({0, 1, 3, "b2"}).ok());
  auto rows = a->events(1, 0, -1);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].message, "a1");
  EXPECT_EQ((*rows)[1].message, "b2");
  EXPECT_EQ((*rows)[1].id, 2);
}

// A running rollout of "web" whose first step orders hosts h0..h(n-1) (orders r<id>-0..).
uint64_t rollout_with_orders(store::Store& st, int n) {
  const uint64_t id = *st.create_rollout(rollout_row("web"));
  auto w = step_of(id);
  for (int i = 0; i < n; ++i)
    w.new_orders.push_back(
        {"r" + std::to_string(id) + "-" + std::to_string(i), id, "h" + std::to_string(i), "{}", false, false, 10 + i});
  EXPECT_TRUE(st.save_step(w).ok());
  return id;
}

// A store keeps the orders and headers it wrote instead of reading them back (etcd_written.h).
// A store that takes over (a new leader) knows none of them: it reads what the first wrote, and
// carries the rollout on as the first would have.
TEST(EtcdStore, AStoreThatTakesOverCarriesOnWhatTheFirstWrote) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto a = open_etcd(client, p);
  const uint64_t id = rollout_with_orders(*a, 4);
  auto w2 = step_of(id);
  w2.acked = {"r1-0", "r1-1"};
  w2.results.push_back({id, "h0", "r1-0", "succeeded", "v2", "", json::object(), 20});
  ASSERT_TRUE(a->save_step(w2).ok());

  auto b = open_etcd(client, p);
  auto open = b->open_orders();
  ASSERT_TRUE(open.ok()) << open.error().message;
  ASSERT_EQ(open->size(), 3u);
  EXPECT_TRUE((*open)[0].acked) << "r1-1's acknowledgement, written by the first store";
  EXPECT_FALSE((*open)[1].acked);
  // The second store acknowledges and reports orders the first made, and one it never read.
  auto b1 = open_etcd(client, p);
  auto w3 = step_of(id, "paused");
  w3.acked = {"r1-0", "r1-2"};  // r1-0 was reported already: nothing to record
  w3.results.push_back({id, "", "r1-3", "failed", "v1", "boom", json::object(), 30});
  ASSERT_TRUE(b1->save_step(w3).ok());
  auto c = open_etcd(client, p);
  open = c->open_orders();
  ASSERT_EQ(open->size(), 2u);
  EXPECT_EQ((*open)[0].order_id, "r1-1");
  EXPECT_EQ((*open)[1].order_id, "r1-2");
  EXPECT_TRUE((*open)[1].acked);
  auto res = c->results(id);
  ASSERT_EQ(res->size(), 2u);
  EXPECT_EQ((*res)[1].order_id, "r1-3");
  EXPECT_EQ((*res)[1].host_id, "h3") << "the host from the order the first store wrote";
  auto r = c->rollout(id);
  ASSERT_TRUE(r.ok() && *r);
  EXPECT_EQ((*r)->phase, "paused");
  EXPECT_EQ((*r)->created_by, "alice") << "the header the first store wrote, carried on";
}

// What a store kept of its own writes is dropped when a write fails: here another writer closed
// an order in between, the first store's step is refused, and its next try reads the order
// again and does not reopen it with the acknowledgement it carries.
TEST(EtcdStore, AFailedWriteDropsWhatTheStoreKept) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto a = open_etcd(client, p);
  const uint64_t id = rollout_with_orders(*a, 1);
  auto other = open_etcd(client, p);
  ASSERT_TRUE(other->record_report({id, "h0", "r1-0", "succeeded", "v2", "", json::object(), 20}).ok());
  auto ack = step_of(id);
  ack.acked = {"r1-0"};
  auto s = a->save_step(ack);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, "conflict");
  ASSERT_TRUE(a->save_step(ack).ok()) << "the second try reads what it no longer trusts";
  EXPECT_TRUE(a->open_orders()->empty()) << "the acknowledgement of a closed order reopened it";
  store::etcd_keys::Layout k{p};
  EXPECT_TRUE(client->range(k.acked(id, "r1-0"))->kvs.empty());
}

// A lazy step (one that decides nothing: reports) is held back and written with the rollout's
// next durable step, as one transaction; a flush() or a read of the rollout writes it sooner.
TEST(EtcdStore, LazyStepsAreWrittenWithTheNextDurableStepOrAFlush) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto st = open_etcd(client, p);
  store::etcd_keys::Layout k{p};
  const uint64_t id = rollout_with_orders(*st, 2);
  const int64_t before = census(*client, p).second;

  auto lazy = step_of(id);
  lazy.durable = false;
  lazy.results.push_back({id, "h0", "r1-0", "succeeded", "v2", "", json::object(), 20});
  lazy.events.push_back({0, id, 20, "h0 healthy on v2"});
  lazy.slots.emplace_back(0, R"({"host_id":"h0","state":"healthy"})");
  ASSERT_TRUE(st->save_step(lazy).ok());
  EXPECT_EQ(census(*client, p).second, before) << "held back: nothing written yet";
  EXPECT_TRUE(client->range(k.results(id), etcd::prefix_end(k.results(id)))->kvs.empty());

  auto next = step_of(id);
  next.results.push_back({id, "h1", "r1-1", "failed", "v1", "boom", json::object(), 30});
  next.events.push_back({0, id, 30, "h1 failed"});
  ASSERT_TRUE(st->save_step(next).ok());
  EXPECT_EQ(census(*client, p).second, before + 1) << "the held step and the durable one: one transaction";
  auto fresh = open_etcd(client, p);
  EXPECT_EQ(fresh->results(id)->size(), 2u);
  auto ev = fresh->events(id, 0, -1);
  ASSERT_EQ(ev->size(), 2u);
  EXPECT_EQ((*ev)[0].message, "h0 healthy on v2");
  EXPECT_EQ((*ev)[1].id, (*ev)[0].id + 1) << "ids in the order the steps were taken, no gap";
  EXPECT_TRUE(fresh->open_orders()->empty());

  // flush() writes what is held; so does a read of the rollout's data.
  lazy.events = {{0, id, 40, "one more"}};
  lazy.results.clear();
  ASSERT_TRUE(st->save_step(lazy).ok());
  ASSERT_TRUE(st->flush().ok());
  EXPECT_EQ(open_etcd(client, p)->events(id, 0, -1)->size(), 3u);
  lazy.events = {{0, id, 50, "and another"}};
  ASSERT_TRUE(st->save_step(lazy).ok());
  EXPECT_EQ(st->events(id, 0, -1)->size(), 4u) << "the leader reads what it wrote";
  EXPECT_EQ(open_etcd(client, p)->events(id, 0, -1)->size(), 4u);
}

// Held steps whose write failed are kept and written by the next write, once.
TEST(EtcdStore, HeldStepsAreKeptWhenTheirWriteFails) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto st = open_etcd(client, p);
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  auto lazy = step_of(id);
  lazy.durable = false;
  lazy.events.push_back({0, id, 20, "held"});
  ASSERT_TRUE(st->save_step(lazy).ok());
  // Another writer in between: the first store's flush is refused, nothing of it written.
  ASSERT_TRUE(open_etcd(client, p)->add_event({0, 99, 1, "other"}).ok());
  auto s = st->flush();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, "conflict");
  ASSERT_TRUE(st->flush().ok()) << "kept, and written by the next try";
  ASSERT_TRUE(st->flush().ok());
  auto ev = open_etcd(client, p)->events(id, 0, -1);
  ASSERT_EQ(ev->size(), 1u) << "written once";
  EXPECT_EQ((*ev)[0].message, "held");
}

TEST(EtcdStore, AFenceOnAKeyThatDoesNotExistWritesNothing) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto st = open_etcd(client, p, store::Fence{p + "leader", 12345});
  auto s = st->audit({0, 1, "x", "y", "z", "allowed"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, "deposed");
  EXPECT_EQ(census(*client, p).first, 0u);
}

// A 10,000-host rollout's first step (every slot, a batch of 10,000 orders) is one transaction.
TEST(EtcdStore, TenThousandHostStepIsOneTransaction) {
  using namespace rollout;
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto st = open_etcd(client, p);
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  Plan plan;
  plan.batches = {Amount{true, 100}};
  auto r = step(State{}, EvStart{id, "web", "v2", plan, rollout::testing::make_hosts(10000), ""}, 1000);
  ASSERT_TRUE(r.error.ok());
  store::StepWrite w;
  w.rollout_id = id;
  w.phase = phase_name(r.state.phase);
  w.state = r.state.header_json();
  for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
  for (const auto& a : r.actions) {
    if (auto* o = std::get_if<ActOrder>(&a))
      w.new_orders.push_back({o->order_id, id, o->host_id, "{}", false, false, 1});
  }
  for (const auto& a : r.actions) {
    if (auto* e = std::get_if<ActRecord>(&a)) w.events.push_back({0, id, 1, e->message});
  }
  ASSERT_EQ(w.slots.size(), 10000u);
  ASSERT_EQ(w.new_orders.size(), 10000u);
  const auto before = census(*client, p);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(st->save_step(w).ok());
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("save_step_ms", static_cast<int>(ms));  // informational (docs/BENCHMARKS.md has the numbers)
  size_t bytes = 0;
  for (const auto& [pos, slot] : w.slots) bytes += slot.size() + p.size() + 37;
  for (const auto& o : w.new_orders) bytes += 2 * (o.order_id.size() + p.size()) + o.body.size() + 160;
  std::cout << "save_step of a 10,000-host start: " << ms << " ms, about " << bytes / 1024 << " KiB\n";
  const auto after = census(*client, p);
  EXPECT_EQ(after.second, before.second + 1) << "one revision: one transaction";
  // Small keys: the orders made together and the first slots (the rollout's plan) in keys of at
  // most 256 rows, written once; a slot's every later change is a key of its own (below).
  EXPECT_EQ(census(*client, p + "order/").first, 40u);
  EXPECT_EQ(census(*client, p + "slot_plan/").first, 40u);
  EXPECT_EQ(census(*client, p + "slot/").first, 0u);
  auto back = st->rollout(id);
  ASSERT_TRUE(back.ok() && back->has_value());
  EXPECT_EQ(*State::from_json((*back)->state), r.state);
  EXPECT_EQ(st->open_orders()->size(), 10000u);
  // The next step's slots are keys of their own, read over the plan.
  auto next = step(
      r.state, EvReport{r.state.hosts[42].host_id, r.state.hosts[42].order_id, Outcome::kSucceeded, "v2", ""}, 2000);
  store::StepWrite w2;
  w2.rollout_id = id;
  w2.phase = phase_name(next.state.phase);
  w2.state = next.state.header_json();
  for (uint32_t i : next.touched) w2.slots.emplace_back(i, next.state.hosts[i].to_json_text());
  ASSERT_FALSE(w2.slots.empty());
  ASSERT_TRUE(st->save_step(w2).ok());
  EXPECT_EQ(census(*client, p + "slot/").first, w2.slots.size());
  back = st->rollout(id);
  ASSERT_TRUE(back.ok() && back->has_value());
  EXPECT_EQ(*State::from_json((*back)->state), next.state);
}

TEST(EtcdStore, TooLargeATransactionNamesEtcdsLimits) {
  gantry::testing::EtcdClusterOptions o;
  o.max_txn_ops = 128;  // etcd's default
  EtcdCluster small(1, o);
  auto st = open_etcd(client_of(small), "/gantry/");
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  auto first = step_of(id);
  first.slots.emplace_back(0, "{}");  // the plan: one key
  ASSERT_TRUE(st->save_step(first).ok());
  const json stored = (*st->rollout(id))->state;
  auto w = step_of(id);
  for (uint32_t i = 0; i < 200; ++i) w.slots.emplace_back(i, "{}");  // a key each from now on
  auto s = st->save_step(w);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("--max-txn-ops"), std::string::npos) << s.error().message;
  // Nothing of it was written, and the store goes on.
  EXPECT_EQ((*st->rollout(id))->state, stored);
  ASSERT_TRUE(st->add_event({0, id, 1, "after"}).ok());
}

TEST(EtcdStore, HostileValuesAreErrorsNotCrashes) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto st = open_etcd(client, p);
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  auto w = step_of(id);
  w.slots.emplace_back(0, "{}");
  w.new_orders.push_back({"r1-1", id, "h", "{}", false, false, 1});
  ASSERT_TRUE(st->save_step(w).ok());
  ASSERT_TRUE(st->add_event({0, id, 1, "x"}).ok());
  ASSERT_TRUE(st->put_host({"h", json::object(), json::array(), 1, 1}).ok());

  store::etcd_keys::Layout k{p};
  const std::string order_key = client->range(k.orders(id), etcd::prefix_end(k.orders(id)))->kvs.at(0).key;
  const std::string bad_utf8 = std::string("{\"host_id\":\"\xff\xfe\"}");
  for (const auto& [key, value, read] : std::vector<std::tuple<std::string, std::string, std::function<bool()>>>{
           {k.host("h"), "not json", [&] { return st->hosts().ok(); }},
           {k.host("h"), bad_utf8, [&] { return st->hosts().ok(); }},
           {k.host("h"), R"({"host_id":5})", [&] { return st->hosts().ok(); }},
           {k.host("h"), "[]",
            [&] {
              return st->put_host({"h", json::object(), json::array(), 1, 2}).ok();
            }},
           {k.rollout(id), R"({"id":"1"})", [&] { return st->rollout(id).ok(); }},
           {k.rollout(id), R"({"id":-1})", [&] { return st->rollouts("", false, 10, false).ok(); }},
           {k.slot(id, 0), "{", [&] { return st->rollout(id).ok(); }},
           {k.slot_plan(id, 0), "[", [&] { return st->rollout(id).ok(); }},
           {k.slot_plan(id, 0), "{}", [&] { return st->rollout(id).ok(); }},
           {order_key, R"({"order_id":"r1-1"})", [&] { return st->open_orders().ok(); }},
           {order_key,
            R"([{"order_id":"r1-1","rollout_id":999,"host_id":"h","body":"{}","acked":false,"created_at":1,"seq":1}])",
            [&] { return st->open_orders().ok(); }},
           // A store reads an order it did not write itself (it keeps those it wrote: etcd_written.h).
           {order_key, "\x00\x01", [&] { return open_etcd(client, p)->mark_acked("r1-1").ok(); }},
           {k.event(id, 1), R"({"id":1e400})", [&] { return st->events(id, 0, 10).ok(); }},
           {k.event(id, 1), R"({"id":18446744073709551615,"rollout_id":1,"at":1,"message":""})",
            [&] { return st->recent_events(id, 10).ok(); }},
           {k.by_service("web", 1) + "x", "", [&] { return st->rollouts("web", false, 10, false).ok(); }},
           {k.revision("web"), "many",
            [&] {
              auto e = step_of(id, "succeeded");
              e.finished_at = 1;
              e.assign_revision = true;
              return st->save_step(e).ok();
            }},
       }) {
    auto was = client->range(key);
    ASSERT_TRUE(was.ok());
    ASSERT_TRUE(client->txn({}, {etcd::Op::put(key, value)}).ok());
    EXPECT_FALSE(read()) << "value " << safe_text(value) << " at " << key;
    // The record as it was, for the next case.
    ASSERT_TRUE(client->txn({}, {was->kvs.empty() ? etcd::Op::del(key) : etcd::Op::put(key, was->kvs[0].value)}).ok());
  }
  ASSERT_TRUE(client->txn({}, {etcd::Op::put(k.counters(), "{\"rollout\":\"x\"}")}).ok());
  auto reopened = store::EtcdStore::open(client, p);
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.error().code, "store");
  EXPECT_NE(reopened.error().message.find("meta/counters"), std::string::npos) << reopened.error().message;
}

TEST(EtcdStore, CheckpointCompactsHistory) {
  auto client = client_of(shared_etcd());
  const std::string p = fresh_prefix();
  auto st = open_etcd(client, p);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(st->add_event({0, 1, i, "e"}).ok());
  EXPECT_GT(st->wal_backlog(), 0);
  EXPECT_EQ(st->checkpoints(), 0u);
  ASSERT_TRUE(st->checkpoint().ok());
  EXPECT_EQ(st->wal_backlog(), 0);
  EXPECT_EQ(st->checkpoints(), 1u);
  ASSERT_TRUE(st->checkpoint().ok());  // nothing to do
  EXPECT_EQ(st->checkpoints(), 1u);
  // etcd's history before the checkpoint is gone: compacting below it is refused.
  auto again = client->compact(census(*client, p).second - 1);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find("compacted"), std::string::npos);
  // The data is all there, and a store opened again knows where the last checkpoint was.
  EXPECT_EQ(st->events(1, 0, 10)->size(), 5u);
  auto st2 = open_etcd(client, p);
  EXPECT_EQ(st2->wal_backlog(), 0);
  ASSERT_TRUE(st2->add_event({0, 1, 9, "e"}).ok());
  EXPECT_EQ(st2->wal_backlog(), 1);
}

// Every member of three is killed in turn (the raft leader among them) while the store writes:
// no write fails, the ids go on without a gap.
TEST(EtcdStore, LosingOneMemberOfThreeIsNotVisible) {
  EtcdCluster three(3);
  auto cfg = etcd::parse_store_uri(three.uri());
  ASSERT_TRUE(cfg.ok());
  cfg->call_timeout_ms = 5000;  // an election after the leader's loss takes about a second
  auto client = etcd::Client::connect(*cfg);
  ASSERT_TRUE(client.ok());
  std::shared_ptr<etcd::Client> shared(std::move(*client));
  auto st = open_etcd(shared, "/gantry/");
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  int64_t written = 0;
  for (int victim = 0; victim < 3; ++victim) {
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(st->add_event({0, id, ++written, "before"}).ok()) << three.diagnostics();
    three.kill(victim);
    for (int i = 0; i < 3; ++i) {
      auto s = st->add_event({0, id, ++written, "without m" + std::to_string(victim)});
      ASSERT_TRUE(s.ok()) << "victim " << victim << " i " << i << ": " << s.error().message << three.diagnostics();
    }
    auto rows = st->events(id, 0, -1);
    ASSERT_TRUE(rows.ok()) << rows.error().message;
    three.start(victim);
  }
  auto rows = st->events(id, 0, -1);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), static_cast<size_t>(written));
  for (size_t i = 0; i < rows->size(); ++i) {
    EXPECT_EQ((*rows)[i].id, static_cast<int64_t>(i + 1));
    EXPECT_EQ((*rows)[i].at, static_cast<int64_t>(i + 1));
  }
}

// Without a quorum every write fails (code "etcd", not "deposed") and nothing is decided; when
// the quorum is back, writing goes on and every write that succeeded is there once.
TEST(EtcdStore, WithoutQuorumWritesFailAndResumeAfter) {
  EtcdCluster three(3);
  auto cfg = etcd::parse_store_uri(three.uri());
  ASSERT_TRUE(cfg.ok());
  cfg->call_timeout_ms = 1500;
  auto client = etcd::Client::connect(*cfg);
  ASSERT_TRUE(client.ok());
  std::shared_ptr<etcd::Client> shared(std::move(*client));
  auto won = shared->txn({}, {etcd::Op::put("/gantry/leader", "{}")});
  ASSERT_TRUE(won.ok());
  auto st = open_etcd(shared, "/gantry/", store::Fence{"/gantry/leader", won->revision});
  const uint64_t id = *st->create_rollout(rollout_row("web"));
  std::vector<std::string> ok;
  auto add = [&](const std::string& m) {
    auto s = st->add_event({0, id, 1, m});
    if (s.ok()) ok.push_back(m);
    return s;
  };
  ASSERT_TRUE(add("one").ok());
  three.stop(1);
  three.stop(2);
  for (int i = 0; i < 3; ++i) {
    auto s = add("lost quorum " + std::to_string(i));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, "etcd") << s.error().message;
  }
  EXPECT_FALSE(st->create_rollout(rollout_row("web")).ok());
  three.start(1);  // a majority again
  bool back = false;
  for (int i = 0; i < 10 && !back; ++i) back = add("back " + std::to_string(i)).ok();
  ASSERT_TRUE(back) << three.diagnostics();
  ASSERT_TRUE(add("two").ok());
  auto rows = st->events(id, 0, -1);
  ASSERT_TRUE(rows.ok()) << rows.error().message;
  std::set<int64_t> ids;
  std::vector<std::string> seen;
  for (const auto& e : *rows) {
    EXPECT_TRUE(ids.insert(e.id).second) << "event id " << e.id << " twice";
    seen.push_back(e.message);
  }
  for (const auto& m : ok) EXPECT_EQ(std::count(seen.begin(), seen.end(), m), 1) << m;
}

TEST(EtcdStore, OpenRefusesAnEmptyPrefixAndAddsTheSlash) {
  auto client = client_of(shared_etcd());
  auto bad = store::EtcdStore::open(client, "");
  ASSERT_FALSE(bad.ok());
  auto st = open_etcd(client, "/slashless");
  EXPECT_EQ(st->prefix(), "/slashless/");
}

}  // namespace
}  // namespace gantry
