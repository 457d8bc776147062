// The operator API's table and the checks around every command: unlisted commands refused,
// roles from the table, audit rows written (and a failed audit write an error the caller sees).
// A real store on a temp file, the real executor over fake sinks, no sockets.
#include "coordinator/server/operator_api.h"

#include <gtest/gtest.h>

#include "common/util/sha256.h"
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
    // A peer coordinator: the commands marked for peers, nothing else, whatever their rank.
    auto rep = run(std::string(c.name), {{"service", "web"}}, Role::kPeer, "peer coordinator");
    const bool denied = rep.error.rfind("permission denied", 0) == 0;
    EXPECT_EQ(denied, !c.peer) << c.name << " as peer: " << rep.error;
    if (denied) ++refusals;
  }
  EXPECT_GT(refusals, 0u);
  EXPECT_EQ(metrics.auth_refused, refusals);
  size_t audited_refusals = 0;
  for (const auto& a : audit())
    if (a.decision.rfind("refused: role", 0) == 0) ++audited_refusals;
  EXPECT_EQ(audited_refusals, refusals);
}

TEST_F(OperatorApiTest, APeerCoordinatorReadsAndFetchesArtifactsAndChangesNothing) {
  // What a peer may run: what a standby shows, and artifact-chunk (HA_CONTRACT).
  std::set<std::string> peer;
  for (const auto& c : OperatorApi::commands()) {
    if (c.peer) peer.insert(std::string(c.name));
    if (c.peer) {
      EXPECT_FALSE(c.mutates) << c.name;
    }
  }
  EXPECT_EQ(peer, (std::set<std::string>{"hosts", "status", "release.get", "rollout.get", "history", "audit",
                                         "artifact-chunk"}));
  // artifact-chunk: peers and admins only.
  EXPECT_EQ(OperatorApi::find_command("artifact-chunk")->min_role, Role::kAdmin);
  for (Role role : {Role::kViewer, Role::kDeployer}) {
    auto rep = run("artifact-chunk", {{"sha256", std::string(64, 'a')}, {"offset", 0u}, {"length", 1u}}, role);
    EXPECT_EQ(rep.error.rfind("permission denied", 0), 0u) << rep.error;
  }
  auto rep = run("rollout.start", {{"service", "web"}, {"version", "v2"}}, Role::kPeer, "peer coordinator");
  EXPECT_FALSE(rep.ok);
  EXPECT_NE(rep.error.find("peer coordinator is a peer"), std::string::npos) << rep.error;
  EXPECT_TRUE(exec->active().empty());
  auto rows = audit();
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.front().who, "peer coordinator");  // newest first
  EXPECT_EQ(rows.front().decision, "refused: role peer < deployer");
}

TEST_F(OperatorApiTest, ArtifactChunkAnswersTheBytesOfACompleteArtifactAndChecksItsArguments) {
  std::string bytes;
  for (int i = 0; i < 300000; ++i) bytes.push_back(static_cast<char>(i * 7 % 251));
  const std::string sha = sha256_hex(bytes);
  auto up = artifacts->upload(sha, bytes.size(), 0, bytes);
  ASSERT_TRUE(up && up->complete);
  const auto chunk = [&](nlohmann::json args, Role role = Role::kPeer) {
    return run("artifact-chunk", std::move(args), role, "peer coordinator");
  };
  auto r = chunk({{"sha256", sha}, {"offset", 1000u}, {"length", 5000u}});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result["size"], bytes.size());
  EXPECT_EQ(r.result["offset"], 1000u);
  const auto& bin = r.result["data"].get_binary();
  EXPECT_EQ(std::string(bin.begin(), bin.end()), bytes.substr(1000, 5000));
  // Short at the end, empty at the very end; admins may read too.
  r = chunk({{"sha256", sha}, {"offset", bytes.size() - 10}, {"length", 1048576u}}, Role::kAdmin);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result["data"].get_binary().size(), 10u);
  r = chunk({{"sha256", sha}, {"offset", bytes.size()}, {"length", 1u}});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.result["data"].get_binary().empty());
  // Refused: past the end, an artifact not here, bad digests, lengths out of range, wrong types.
  r = chunk({{"sha256", sha}, {"offset", bytes.size() + 1}, {"length", 1u}});
  EXPECT_EQ(r.error.rfind("range:", 0), 0u) << r.error;
  r = chunk({{"sha256", std::string(64, 'c')}, {"offset", 0u}, {"length", 1u}});
  EXPECT_EQ(r.error.rfind("not_found:", 0), 0u) << r.error;
  for (const auto& bad :
       {std::string(63, 'a'), std::string(64, 'A'), std::string("../../etc/passwd"), std::string(64, 'a') + "/x"}) {
    r = chunk({{"sha256", bad}, {"offset", 0u}, {"length", 1u}});
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("sha256 must be"), std::string::npos) << r.error;
  }
  for (uint64_t len : {uint64_t{0}, uint64_t{1048577}, uint64_t{1} << 40}) {
    r = chunk({{"sha256", sha}, {"offset", 0u}, {"length", len}});
    EXPECT_NE(r.error.find("length must be"), std::string::npos) << r.error;
  }
  r = chunk({{"sha256", sha}, {"offset", -1}, {"length", 1u}});
  EXPECT_NE(r.error.find("non-negative"), std::string::npos) << r.error;
  r = chunk({{"sha256", sha}, {"length", 1u}});
  EXPECT_NE(r.error.find("missing argument: offset"), std::string::npos) << r.error;
  // Reads are not audited (a release is thousands of chunks).
  for (const auto& a : audit()) EXPECT_NE(a.command, "artifact-chunk") << a.decision;
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
