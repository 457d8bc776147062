// The operator API's table and the checks around every command: unlisted commands refused,
// roles from the table, audit rows written (and a failed audit write an error the caller sees).
// A real store on a temp file, the real executor over fake sinks, no sockets.
#include "coordinator/server/operator_api.h"

#include <gtest/gtest.h>

#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::FailingWrites;
using testing::FakeOrders;
using testing::FakeSignals;
using testing::TempDir;

class OperatorApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_path = dir.path + "/coordinator.db";
    store = testing::open_store(db_path);
    ASSERT_TRUE(store);
    testing::put_release(*store, "web", "v2");
    artifacts = std::make_unique<ArtifactStore>(dir.path + "/artifacts");
    ASSERT_TRUE(artifacts->init().ok());
    keys = std::make_unique<KeyRing>(*store, clock);
    ASSERT_TRUE(keys->load().ok());
    exec = std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
    api = std::make_unique<OperatorApi>(OperatorApi::Deps{
        *store, *exec, registry, *artifacts, *keys, metrics, changed, clock, /*secure=*/true, /*epoch=*/1,
        [this](const std::string& host, const std::string&) { disconnected.push_back(host); }});
    for (int i = 1; i <= 3; ++i) {
      proto::Hello h;
      h.host_id = "web-" + std::to_string(i);
      h.services.push_back({"web", "v1", "", "idle", ""});
      registry.on_hello(h, h.host_id, clock.now_ms(), clock.wall_ms());
    }
  }
  proto::OpReply run(const std::string& command, nlohmann::json args, Role role, const std::string& who = "alice") {
    proto::OpRequest req;
    req.request_id = "req-1";
    req.command = command;
    req.args = std::move(args);
    return api->handle(req, who, role);
  }
  std::vector<store::AuditRow> audit() {
    auto rows = store->audit_log(1000);
    EXPECT_TRUE(rows);
    return rows ? *rows : std::vector<store::AuditRow>{};
  }

  TempDir dir;
  std::string db_path;
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
  std::vector<std::string> disconnected;
};

TEST_F(OperatorApiTest, ACommandMissingFromTheTableIsRefusedForEveryRoleAndAudited) {
  for (Role role : {Role::kViewer, Role::kDeployer, Role::kAdmin}) {
    auto rep = run("rollout.delete_everything", {}, role);
    EXPECT_FALSE(rep.ok);
    EXPECT_EQ(rep.request_id, "req-1");
    EXPECT_NE(rep.error.find("unknown command"), std::string::npos) << rep.error;
  }
  auto rows = audit();
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& a : rows) EXPECT_EQ(a.decision, "refused: unknown command");
}

TEST_F(OperatorApiTest, TheTableHoldsEveryCommandOnceWithItsRole) {
  std::set<std::string_view> names;
  for (const auto& c : OperatorApi::commands()) {
    EXPECT_TRUE(names.insert(c.name).second) << c.name << " is listed twice";
    EXPECT_NE(c.handler, nullptr) << c.name;
    // Every command that changes something is on the record.
    if (c.mutates) {
      EXPECT_NE(c.audit, OperatorApi::Audit::kNone) << c.name;
    }
  }
  EXPECT_EQ(OperatorApi::find_command("status")->min_role, Role::kViewer);
  EXPECT_FALSE(OperatorApi::find_command("status")->mutates);
  EXPECT_EQ(OperatorApi::find_command("rollout.start")->min_role, Role::kDeployer);
  EXPECT_EQ(OperatorApi::find_command("rollback")->min_role, Role::kDeployer);
  EXPECT_EQ(OperatorApi::find_command("keys.revoke")->min_role, Role::kAdmin);
  EXPECT_EQ(OperatorApi::find_command("keys.list")->min_role, Role::kAdmin);
  EXPECT_EQ(OperatorApi::find_command("no.such"), nullptr);
}

TEST_F(OperatorApiTest, EveryCommandIsRefusedBelowItsTableRoleAndTheRefusalAudited) {
  size_t refusals = 0;
  for (const auto& c : OperatorApi::commands()) {
    for (Role role : {Role::kViewer, Role::kDeployer, Role::kAdmin}) {
      auto rep = run(std::string(c.name), {{"service", "web"}}, role);
      const bool denied = rep.error.rfind("permission denied", 0) == 0;
      EXPECT_EQ(denied, role < c.min_role) << c.name << " as " << role_name(role) << ": " << rep.error;
      if (denied) ++refusals;
    }
  }
  EXPECT_GT(refusals, 0u);
  EXPECT_EQ(metrics.auth_refused, refusals);
  size_t audited_refusals = 0;
  for (const auto& a : audit())
    if (a.decision.rfind("refused: role", 0) == 0) ++audited_refusals;
  EXPECT_EQ(audited_refusals, refusals);
}

TEST_F(OperatorApiTest, ARolloutStartIsAuditedInTheSameCommitAsItsFirstStep) {
  auto rep = run("rollout.start", {{"service", "web"}, {"version", "v2"}, {"reason", "test"}}, Role::kDeployer);
  ASSERT_TRUE(rep.ok) << rep.error;
  EXPECT_EQ(rep.result["service"], "web");
  EXPECT_FALSE(rep.result.contains("hosts"));  // a summary
  EXPECT_EQ(orders.sent.size(), 1u);
  auto rows = audit();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].command, "rollout.start");
  EXPECT_EQ(rows[0].who, "alice");
  EXPECT_EQ(rows[0].target, "web");
  EXPECT_EQ(rows[0].decision, "ok");
}

TEST_F(OperatorApiTest, AViewerCannotStartARollout) {
  auto rep = run("rollout.start", {{"service", "web"}, {"version", "v2"}}, Role::kViewer);
  EXPECT_FALSE(rep.ok);
  EXPECT_TRUE(exec->active().empty());
  EXPECT_TRUE(orders.sent.empty());
}

TEST_F(OperatorApiTest, AFailedAuditWriteIsAnErrorTheCallerSees) {
  FailingWrites fail(db_path, "audit");
  // A refusal whose audit row cannot be written says so.
  auto unknown = run("no.such", {}, Role::kAdmin);
  EXPECT_FALSE(unknown.ok);
  EXPECT_NE(unknown.error.find("audit record could not be written"), std::string::npos) << unknown.error;
  auto denied = run("keys.list", {}, Role::kViewer);
  EXPECT_FALSE(denied.ok);
  EXPECT_NE(denied.error.find("audit record could not be written"), std::string::npos) << denied.error;
  // A command that steps no rollout: it ran, but the caller hears that it is not on the record.
  auto listed = run("keys.list", {}, Role::kAdmin);
  EXPECT_FALSE(listed.ok);
  EXPECT_NE(listed.error.find("audit record could not be written"), std::string::npos) << listed.error;
  // A rollout start: its audit row rides in the first step, so that step is not saved and
  // nothing is ordered.
  auto started = run("rollout.start", {{"service", "web"}, {"version", "v2"}}, Role::kDeployer);
  EXPECT_FALSE(started.ok);
  EXPECT_NE(started.error.find("injected write failure"), std::string::npos) << started.error;
  EXPECT_TRUE(orders.sent.empty());
  EXPECT_TRUE(exec->active().empty());
  // Reads are not audited and still work.
  auto status = run("status", {}, Role::kViewer);
  EXPECT_TRUE(status.ok) << status.error;
}

TEST_F(OperatorApiTest, ControlCommandsRecordWhoAskedWithTheStep) {
  ASSERT_TRUE(run("rollout.start", {{"service", "web"}, {"version", "v2"}}, Role::kDeployer).ok);
  auto rep = run("rollout.pause", {{"service", "web"}}, Role::kDeployer, "bob");
  ASSERT_TRUE(rep.ok) << rep.error;
  EXPECT_EQ(rep.result["phase"], "paused");
  const auto* a = exec->find(rep.result["id"].get<uint64_t>());
  ASSERT_NE(a, nullptr);
  auto events = store->events(a->row.id, 0, 100);
  ASSERT_TRUE(events);
  bool asked = false;
  for (const auto& e : *events) asked = asked || e.message == "bob asked to pause";
  EXPECT_TRUE(asked);
  auto rows = audit();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].command, "rollout.pause");  // newest first
  EXPECT_EQ(rows[0].decision, "ok");
}

TEST_F(OperatorApiTest, BadArgumentsAreErrorsNotCrashes) {
  EXPECT_FALSE(run("rollout.get", {{"id", "seven"}}, Role::kViewer).ok);
  EXPECT_FALSE(run("rollout.start", {{"service", "../etc"}, {"version", "v2"}}, Role::kAdmin).ok);
  EXPECT_FALSE(
      run("rollout.start", {{"service", "web"}, {"version", "v2"}, {"plan", {{"batches", "lots"}}}}, Role::kAdmin).ok);
  EXPECT_FALSE(run("audit", {{"limit", -1}}, Role::kViewer).ok);
  EXPECT_TRUE(exec->active().empty());
}

}  // namespace
}  // namespace gantry::coordinator
