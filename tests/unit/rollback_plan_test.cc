// `rollback` without plan fields takes the plan of the rollout it reverts (the one that installed
// the current revision); fields given replace those only; `rollback.plan` shows the same choice
// and changes nothing. A real store on a temp file, the real executor over fake sinks.
#include <gtest/gtest.h>

#include "coordinator/rollout/plan.h"
#include "coordinator/server/operator_api.h"
#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::FakeOrders;
using testing::FakeSignals;
using testing::TempDir;

class RollbackPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store = testing::open_store(dir.path + "/coordinator.db");
    ASSERT_TRUE(store);
    testing::put_release(*store, "web", "v1");
    testing::put_release(*store, "web", "v2");
    artifacts = std::make_unique<ArtifactStore>(dir.path + "/artifacts");
    ASSERT_TRUE(artifacts->init().ok());
    keys = std::make_unique<KeyRing>(*store, clock);
    ASSERT_TRUE(keys->load().ok());
    exec = std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
    api = std::make_unique<OperatorApi>(OperatorApi::Deps{*store, *exec, registry, *artifacts, *keys, metrics, changed,
                                                          clock, /*secure=*/false, /*epoch=*/1,
                                                          [](const std::string&, const std::string&) {}});
    for (int i = 1; i <= 5; ++i) {
      proto::Hello h;
      h.host_id = "web-" + std::to_string(i);
      h.labels["zone"] = i % 2 ? "a" : "b";
      h.services.push_back({"web", "v2", "v1", "idle", ""});
      registry.on_hello(h, h.host_id, clock.now_ms(), clock.wall_ms());
    }
    first = succeeded("v1", {{"batches", {"100%"}}});
    second = succeeded("v2", {{"batches", {1, 2, 2}},
                              {"max_failures", 1},
                              {"domain_label", "zone"},
                              {"max_per_domain", 1},
                              {"min_healthy_time", "3s"}});
  }
  // A rollout of `version` that succeeded with `plan`, as the store keeps it; its id.
  uint64_t succeeded(const std::string& version, const nlohmann::json& plan) {
    store::RolloutRow row;
    row.service = "web";
    row.version = version;
    row.phase = "running";
    row.created_by = "test";
    row.state = nlohmann::json::object();
    auto id = store->create_rollout(row);
    EXPECT_TRUE(id);
    auto p = rollout::Plan::from_json(plan);
    EXPECT_TRUE(p) << (p ? "" : p.error().message);
    store::StepWrite w;
    w.rollout_id = *id;
    w.phase = "succeeded";
    w.state = {{"id", *id}, {"service", "web"}, {"version", version}, {"plan", p->to_json()}};
    w.finished_at = clock.wall_ms();
    w.assign_revision = true;
    EXPECT_TRUE(store->save_step(w).ok());
    return *id;
  }
  proto::OpReply run(const std::string& command, nlohmann::json args) {
    proto::OpRequest req;
    req.request_id = "req-1";
    req.command = command;
    req.args = std::move(args);
    return api->handle(req, "alice", Role::kAdmin);
  }

  TempDir dir;
  std::unique_ptr<store::Store> store;
  FakeClock clock;
  FakeOrders orders;
  FakeSignals signals;
  Metrics metrics;
  ChangeFlag changed;
  fleet::Registry registry;
  std::unique_ptr<ArtifactStore> artifacts;
  std::unique_ptr<KeyRing> keys;
  std::unique_ptr<RolloutExecutor> exec;
  std::unique_ptr<OperatorApi> api;
  uint64_t first = 0, second = 0;
};

TEST_F(RollbackPlanTest, WithoutPlanFieldsTheRevertedRolloutsPlanIsUsedWhole) {
  auto preview = run("rollback.plan", {{"service", "web"}});
  ASSERT_TRUE(preview.ok) << preview.error;
  EXPECT_EQ(preview.result["version"], "v1");
  EXPECT_EQ(preview.result["to_revision"], 1);
  EXPECT_EQ(preview.result["reverts_rollout"], second);
  EXPECT_EQ(preview.result["plan_from_rollout"], second);
  EXPECT_TRUE(preview.result["plan_given"].empty());
  EXPECT_EQ(preview.result["batches"].size(), 3u);
  EXPECT_TRUE(orders.sent.empty()) << "a preview orders nothing";

  auto rep = run("rollback", {{"service", "web"}});
  ASSERT_TRUE(rep.ok) << rep.error;
  EXPECT_EQ(rep.result["kind"], "rollback");
  EXPECT_EQ(rep.result["plan_from_rollout"], second);
  auto back = store->rollout(rep.result["id"].get<uint64_t>());
  ASSERT_TRUE(back && back->has_value());
  auto reverted = store->rollout(second);
  ASSERT_TRUE(reverted && reverted->has_value());
  EXPECT_EQ((*back)->state["plan"], (*reverted)->state["plan"]);
  EXPECT_EQ((*back)->state["plan"]["batches"], nlohmann::json::parse("[1, 2, 2]"));
  EXPECT_EQ(preview.result["plan"], (*back)->state["plan"]);
}

TEST_F(RollbackPlanTest, FieldsGivenReplaceThoseFieldsOnly) {
  auto rep = run("rollback", {{"service", "web"}, {"plan", {{"batches", {"50%"}}}}});
  ASSERT_TRUE(rep.ok) << rep.error;
  EXPECT_EQ(rep.result["plan_given"], nlohmann::json::parse(R"(["batches"])"));
  const auto& plan = rep.result["plan"];
  EXPECT_EQ(plan["batches"], nlohmann::json::parse(R"(["50%"])"));
  EXPECT_EQ(plan["max_failures"], 1);
  EXPECT_EQ(plan["domain_label"], "zone");
  EXPECT_EQ(plan["max_per_domain"], 1);
  EXPECT_EQ(plan["min_healthy_time"], 3000);
}

TEST_F(RollbackPlanTest, APreviewDuringAnActiveRolloutNamesIt) {
  auto started = run("rollout.start", {{"service", "web"}, {"version", "v1"}, {"plan", {{"batches", {1}}}}});
  ASSERT_TRUE(started.ok) << started.error;
  auto preview = run("rollback.plan", {{"service", "web"}});
  ASSERT_TRUE(preview.ok) << preview.error;
  EXPECT_EQ(preview.result["active_rollout"], started.result["id"]);
  EXPECT_FALSE(preview.result.contains("reverts_rollout"));
}

}  // namespace
}  // namespace gantry::coordinator
