// `gantry-coordinator migrate --from sqlite:PATH --to etcd://...` as a user runs it: the real
// binary, a real SQLite database written through SqliteStore, a real etcd. Afterwards every read
// of the etcd store answers what the SQLite store answers.
#include <gtest/gtest.h>

#include "coordinator/rollout/state_machine.h"
#include "coordinator/store/etcd_store.h"
#include "coordinator/store/sqlite_store.h"
#include "tests/integration/store_reads.h"
#include "tests/support/etcd_cluster.h"
#include "tests/unit/rollout_test_util.h"

namespace gantry {
namespace {

using nlohmann::json;
using store::testing::everything;

std::string coordinator_bin() { return testing::bin_dir() + "/coordinator/gantry-coordinator"; }

std::shared_ptr<etcd::Client> client_of(const testing::EtcdCluster& c) {
  auto cfg = etcd::parse_store_uri(c.uri());
  EXPECT_TRUE(cfg.ok());
  auto client = etcd::Client::connect(*cfg);
  EXPECT_TRUE(client.ok());
  return std::shared_ptr<etcd::Client>(std::move(*client));
}

// An installation's SQLite store with every kind of row: hosts, releases, two rollouts (one
// ended with results and a revision, one running with open orders), events, timeline, audit,
// desired state, keys, and 40 coordinator starts.
void fill(store::SqliteStore& s) {
  using namespace rollout;
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(s.bump_epoch().ok());
  ASSERT_TRUE(
      s.put_hosts({{"web-1", json{{"zone", "a"}}, json::array(), 1, 2}, {"web-2", json::object(), json::array(), 3, 4}})
          .ok());
  ASSERT_TRUE(s.put_release({"web", "v1", "aa", 10, "/art/aa", 5, "", ""}).ok());
  ASSERT_TRUE(s.put_release({"web", "v2", "bb", 11, "/art/bb", 6, "{\"m\":1}", "ff"}).ok());
  Plan plan;
  plan.batches = {Amount{false, 1}};
  for (uint64_t id : {1u, 2u}) {
    store::RolloutRow row;
    row.service = "web";
    row.version = "v2";
    row.phase = "running";
    row.created_by = "alice";
    row.state = json::object();
    ASSERT_EQ(*s.create_rollout(row), id);
    auto r = step(State{}, EvStart{id, "web", "v2", plan, rollout::testing::make_hosts(3), ""}, 1000);
    ASSERT_TRUE(r.error.ok());
    store::StepWrite w;
    w.rollout_id = id;
    w.phase = phase_name(r.state.phase);
    w.state = r.state.header_json();
    for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
    for (const auto& a : r.actions) {
      if (auto* o = std::get_if<ActOrder>(&a))
        w.new_orders.push_back({o->order_id, id, o->host_id, "{\"o\":1}", false, false, 1000});
      if (auto* e = std::get_if<ActRecord>(&a)) w.events.push_back({0, id, 1000, e->message});
    }
    w.timeline.push_back({id, "web-1", 0, "fetch", 1000, 1001});
    ASSERT_TRUE(s.save_step(w).ok());
    if (id == 1) {
      auto end = step(r.state, EvAbort{}, 2000);
      ASSERT_TRUE(end.error.ok());
      store::StepWrite e;
      e.rollout_id = id;
      e.phase = "succeeded";
      e.state = end.state.header_json();
      e.finished_at = 2000;
      e.assign_revision = true;
      e.results.push_back({id, "web-1", "r1-0", "succeeded", "v2", "ok", json{{"total", 5}}, 1500});
      e.audit.push_back({0, 1500, "alice", "rollout start", "web", "allowed"});
      e.desired = store::DesiredRow{"web", "v2", "", "auto", json{{"batches", json::array({"1"})}}, 1, false, "", 2000};
      ASSERT_TRUE(s.save_step(e).ok());
    }
  }
  ASSERT_TRUE(s.mark_acked(std::vector<std::string>{"r2-0"}).ok());
  ASSERT_TRUE(s.audit({0, 3000, "bob", "status", "", "allowed"}).ok());
  ASSERT_TRUE(s.put_agent_keys({{"AK", "web-1", "accepted", 1, 2, "alice"}}).ok());
  ASSERT_TRUE(s.put_operator_keys({{"OK", "alice", "admin", "active", 1, ""}}).ok());
}

TEST(Migrate, CopiesEveryRowIntoEtcd) {
  testing::TempDir dir("gantry-migrate");
  testing::EtcdCluster etcd(1);
  const std::string db = dir.sub("coordinator.db");
  json before;
  {
    auto s = store::SqliteStore::open(db);
    ASSERT_TRUE(s.ok());
    fill(**s);
    before = everything(**s);
  }
  auto r = testing::run({coordinator_bin(), "migrate", "--from", "sqlite:" + db, "--to", etcd.uri()}, 60000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("rollouts: 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("open orders: 1"), std::string::npos) << r.out;

  auto client = client_of(etcd);
  auto e = store::EtcdStore::open(client, "/gantry/");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(everything(**e), before);
  EXPECT_FALSE(before["results"].empty());
  EXPECT_FALSE(before["open"].empty());
  auto rel = (*e)->release_by_sha("bb");
  ASSERT_TRUE(rel.ok() && rel->has_value());
  EXPECT_EQ((*rel)->manifest, "{\"m\":1}");
  // The next ids go on from the copied ones, and revisions per service too.
  store::RolloutRow row;
  row.service = "web";
  row.phase = "running";
  row.state = json::object();
  const auto id = (*e)->create_rollout(row);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 3u);
  store::StepWrite w;
  w.rollout_id = *id;
  w.phase = "succeeded";
  w.state = json{{"x", 1}};
  w.finished_at = 1;
  w.assign_revision = true;
  ASSERT_TRUE((*e)->save_step(w).ok());
  EXPECT_EQ((*(*e)->rollout(*id))->revision, 2);
  // A leader elected now has an epoch (its key's creation revision) above the SQLite store's 40.
  auto lead = client->txn({}, {etcd::Op::put("/gantry/leader", "{}")});
  ASSERT_TRUE(lead.ok());
  EXPECT_GT(lead->revision, 40);
}

TEST(Migrate, RefusesANonEmptyTargetUnlessForced) {
  testing::TempDir dir("gantry-migrate");
  testing::EtcdCluster etcd(1);
  const std::string db = dir.sub("coordinator.db");
  {
    auto s = store::SqliteStore::open(db);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->put_host({"h1", json::object(), json::array(), 1, 1}).ok());
  }
  auto client = client_of(etcd);
  // A store already there (and a leader key, which --force leaves alone).
  ASSERT_TRUE(client->txn({}, {etcd::Op::put("/gantry/host/old", "{}"), etcd::Op::put("/gantry/leader", "{}")}).ok());
  auto refused = testing::run({coordinator_bin(), "migrate", "--from", "sqlite:" + db, "--to", etcd.uri()}, 60000);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.err;
  EXPECT_EQ(client->range("/gantry/host/old")->kvs.size(), 1u);

  auto forced =
      testing::run({coordinator_bin(), "migrate", "--from", "sqlite:" + db, "--to", etcd.uri(), "--force"}, 60000);
  ASSERT_EQ(forced.exit_code, 0) << forced.out << forced.err;
  EXPECT_TRUE(client->range("/gantry/host/old")->kvs.empty());
  EXPECT_EQ(client->range("/gantry/leader")->kvs.size(), 1u);
  auto e = store::EtcdStore::open(client, "/gantry/");
  ASSERT_TRUE(e.ok());
  auto hosts = (*e)->hosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ(hosts->front().host_id, "h1");

  // Another prefix is another installation: empty, so no --force needed.
  auto other = testing::run(
      {coordinator_bin(), "migrate", "--from", "sqlite:" + db, "--to", etcd.uri(), "--etcd-prefix", "/other/"}, 60000);
  EXPECT_EQ(other.exit_code, 0) << other.err;
}

TEST(Migrate, BadUsageExitsTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"migrate"},
                                             {"migrate", "--from", "/x.db", "--to", "etcd://127.0.0.1:1"},
                                             {"migrate", "--from", "sqlite:/x.db", "--to", "http://127.0.0.1:1"},
                                             {"migrate", "--from", "sqlite:/x.db", "--to"},
                                             {"migrate", "--bogus"}}) {
    std::vector<std::string> argv = {coordinator_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = testing::run(argv, 30000);
    EXPECT_EQ(r.exit_code, 2) << args.size() << r.err;
    EXPECT_NE(r.err.find("usage: gantry-coordinator migrate"), std::string::npos) << r.err;
  }
  auto help = testing::run({coordinator_bin(), "migrate", "--help"}, 30000);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--force"), std::string::npos);
}

TEST(Migrate, AnUnreachableEtcdFailsWithoutTouchingTheDatabase) {
  testing::TempDir dir("gantry-migrate");
  const std::string db = dir.sub("coordinator.db");
  {
    auto s = store::SqliteStore::open(db);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->put_host({"h1", json::object(), json::array(), 1, 1}).ok());
  }
  auto r = testing::run({coordinator_bin(), "migrate", "--from", "sqlite:" + db, "--to",
                         "etcd://127.0.0.1:" + std::to_string(testing::free_tcp_port())},
                        60000);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("etcd"), std::string::npos) << r.err;
  auto s = store::SqliteStore::open(db);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->hosts()->size(), 1u);
}

}  // namespace
}  // namespace gantry
