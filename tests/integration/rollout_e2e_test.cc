// The walking skeleton end to end: a real coordinator and real agents as separate processes
// on loopback, rolling the real demo service and checking each service's own HTTP answer.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/fleet.h"

using gantry::testing::CmdResult;
using gantry::testing::Fleet;
using gantry::testing::json_of;
using gantry::testing::wait_until;

namespace {

int online_hosts(Fleet& f) {
  auto j = json_of(f.cli({"--json", "hosts"}, 10000));
  int n = 0;
  if (j.contains("hosts")) {
    for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
  }
  return n;
}

void start_fleet(Fleet& f) {
  f.start_coordinator();
  f.start_all_agents();
  ASSERT_TRUE(wait_until([&] { return online_hosts(f) == f.size(); }, 20000)) << f.diagnostics();
}

// Installs `version` everywhere in one batch and checks every host serves it.
void install_everywhere(Fleet& f, const std::string& version) {
  auto rel = f.make_release(version, "healthy");
  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", version, "--release", rel, "--batches", "100%", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) ASSERT_EQ(f.served_version(i), version) << "host " << i << f.diagnostics();
}

nlohmann::json last_rollout(Fleet& f) {
  auto st = json_of(f.cli({"--json", "status", "--service", "demo"}, 10000));
  if (!st.contains("rollouts") || st["rollouts"].empty()) return {};
  return st["rollouts"][0];
}

}  // namespace

TEST(RolloutE2E, SuccessfulRolloutInBatches) {
  Fleet f(3);
  start_fleet(f);
  install_everywhere(f, "v1");

  auto rel = f.make_release("v2", "healthy");
  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches", "1,2", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v2") << "host " << i;

  auto ro = last_rollout(f);
  EXPECT_EQ(ro.value("phase", ""), "succeeded");
  EXPECT_EQ(ro["counts"].value("healthy", 0), 3);
  EXPECT_EQ(ro["counts"].value("failed", -1), 0);
  ASSERT_EQ(ro["batches"].size(), 2u);
  EXPECT_EQ(ro["batches"][0].size(), 1u);
  EXPECT_EQ(ro["batches"][1].size(), 2u);
  // The hosts table reports what each agent runs, and the previous release is kept on disk.
  auto hosts = json_of(f.cli({"--json", "hosts"}));
  for (const auto& h : hosts["hosts"]) {
    EXPECT_EQ(h["services"][0].value("current_version", ""), "v2");
  }
  for (int i = 0; i < f.size(); ++i) {
    EXPECT_EQ(gantry::testing::read_file(f.root(i) + "/releases/v1/release.conf").find("version=v1"), 0u);
  }
  // History numbers both revisions.
  auto hist = json_of(f.cli({"--json", "history", "demo"}));
  ASSERT_EQ(hist["rollouts"].size(), 2u);
  EXPECT_EQ(hist["rollouts"][0].value("revision", 0), 2);
  EXPECT_EQ(hist["rollouts"][1].value("revision", 0), 1);
}

// Issue 21: while an order runs, `gantry hosts` shows the phase the agent reported (it showed
// "" for a whole verify), and the phase is cleared by the order's report.
TEST(RolloutE2E, HostsShowTheProgressPhaseWhileAnOrderRuns) {
  Fleet f(1);
  start_fleet(f);
  install_everywhere(f, "v1");
  auto rel = f.make_release("v2", "healthy");
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches", "100%",
                  "--min-healthy-time", "4000"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  auto service_view = [&] {
    auto j = json_of(f.cli({"--json", "hosts"}, 10000));
    if (!j.contains("hosts") || j["hosts"].empty() || j["hosts"][0]["services"].empty()) return nlohmann::json();
    return j["hosts"][0]["services"][0];
  };
  nlohmann::json seen;
  EXPECT_TRUE(wait_until(
      [&] {
        seen = service_view();
        return seen.value("phase", "") == "verifying";
      },
      20000, 100))
      << seen.dump() << f.diagnostics();
  EXPECT_EQ(seen.value("state", ""), "updating") << seen.dump();
  auto table = f.cli({"hosts"});
  EXPECT_NE(table.out.find("verifying"), std::string::npos) << table.out;
  // The report ends it: idle, no phase, the new version.
  EXPECT_TRUE(wait_until(
      [&] {
        seen = service_view();
        return seen.value("current_version", "") == "v2" && seen.value("state", "") == "idle";
      },
      30000, 200))
      << seen.dump() << f.diagnostics();
  EXPECT_EQ(seen.value("phase", "?"), "") << seen.dump();
}

TEST(RolloutE2E, BadReleaseStopsAndEveryHostKeepsServingTheOldOne) {
  Fleet f(3);
  start_fleet(f);
  install_everywhere(f, "v1");

  auto bad = f.make_release("v2", "unhealthy");
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", bad, "--batches", "1,2",
                  "--max-failures", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v1") << "host " << i << f.diagnostics();

  auto ro = last_rollout(f);
  EXPECT_EQ(ro["counts"].value("failed", 0), 1);
  EXPECT_EQ(ro["counts"].value("skipped", 0), 2) << ro.dump(2);  // never ordered: the budget was spent
  std::string phase = ro.value("phase", "");
  EXPECT_TRUE(phase == "rolled_back" || phase == "failed") << phase;
  // The failed host reverted locally and said so.
  bool found = false;
  for (const auto& h : ro["hosts"]) {
    if (h.value("state", "") == "failed") {
      found = true;
      EXPECT_NE(h.value("message", "").find("verif"), std::string::npos) << h.dump();
    }
  }
  EXPECT_TRUE(found) << ro.dump(2);
}

TEST(RolloutE2E, BudgetExceededRollsBackHostsAlreadyUpdated) {
  Fleet f(3);
  start_fleet(f);
  install_everywhere(f, "v1");

  // v2 is healthy on host-1 and host-2 but fails on host-3 (FAIL-v2 marker in its root).
  gantry::testing::run({"touch", f.root(2) + "/FAIL-v2"});
  auto rel = f.make_release("v2", "healthy");
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches", "1",
                  "--max-failures", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err << f.diagnostics();
  auto ro = last_rollout(f);
  EXPECT_EQ(ro.value("phase", ""), "rolled_back") << ro.dump(2);
  EXPECT_EQ(ro["counts"].value("rolled_back", 0), 2) << ro.dump(2);
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v1") << "host " << i << f.diagnostics();

  // Rollback orders went out in reverse order of update: host-2 before host-1.
  auto full = json_of(f.cli({"--json", "rollout", "show", std::to_string(ro.value("id", 0))}));
  std::string log;
  for (const auto& e : full["events"]) log += e.value("message", "") + "\n";
  auto p2 = log.find("host-2", log.find("roll"));
  EXPECT_NE(p2, std::string::npos) << log;
}

TEST(RolloutE2E, AgentKilledBetweenBatchesReconnectsAndIsCounted) {
  Fleet f(3);
  start_fleet(f);
  install_everywhere(f, "v1");

  auto rel = f.make_release("v2", "healthy");
  // Canary pause after batch 0 makes "between batches" a definite moment.
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches", "1,2",
                  "--pause-after", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(wait_until([&] { return last_rollout(f).value("waiting_promote", false); }, 30000)) << f.diagnostics();
  EXPECT_EQ(last_rollout(f)["counts"].value("healthy", 0), 1);

  // host-3 (in batch 1) dies hard and comes back while the rollout waits.
  f.kill_agent(2, SIGKILL);
  f.restart_agent(2);
  ASSERT_TRUE(wait_until([&] { return online_hosts(f) == 3; }, 20000)) << f.diagnostics();

  auto p = f.cli({"rollout", "promote", "--service", "demo"});
  ASSERT_EQ(p.exit_code, 0) << p.out << p.err;
  auto w = f.cli({"rollout", "watch", "--service", "demo"});
  EXPECT_EQ(w.exit_code, 0) << w.out << w.err << f.diagnostics();
  auto ro = last_rollout(f);
  EXPECT_EQ(ro.value("phase", ""), "succeeded");
  EXPECT_EQ(ro["counts"].value("healthy", 0), 3);
  EXPECT_EQ(ro["counts"].value("failed", -1), 0);
  EXPECT_EQ(ro["counts"].value("unknown", -1), 0);
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v2") << "host " << i;
}

TEST(RolloutE2E, OperatorRollbackReturnsToThePreviousRevision) {
  Fleet f(2);
  start_fleet(f);
  install_everywhere(f, "v1");
  install_everywhere(f, "v2");
  auto r = f.cli({"rollback", "--service", "demo", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v1") << "host " << i;
  auto ro = last_rollout(f);
  EXPECT_EQ(ro.value("kind", ""), "rollback");
  EXPECT_EQ(ro.value("version", ""), "v1");
}

TEST(RolloutE2E, SecondRolloutOfTheSameServiceIsRefusedWithTheRunningId) {
  Fleet f(2);
  start_fleet(f);
  install_everywhere(f, "v1");
  auto rel = f.make_release("v2", "healthy");
  auto r1 = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches",
                   "1", "--pause-after", "0"});
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto id = json_of(r1).value("id", 0);
  auto r2 = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--batches", "1"});
  EXPECT_EQ(r2.exit_code, 3);
  EXPECT_NE(r2.err.find("rollout " + std::to_string(id)), std::string::npos) << r2.err;
  auto a = f.cli({"rollout", "abort", "--service", "demo"});
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(last_rollout(f).value("phase", ""), "aborted");
}

// A release is one non-empty archive file: an empty file or a directory is refused by the CLI
// before anything is sent (the coordinator answered both with "open …/<sha>.part: No such file
// or directory"), with exit code 2 and the reason.
TEST(RolloutE2E, EmptyFileOrDirectoryIsNotARelease) {
  Fleet f(0);
  f.start_coordinator();
  const std::string empty = f.dir() + "/empty.tar";
  std::ofstream(empty).close();
  auto e = f.cli({"release", "upload", empty, "--service", "demo", "--version", "v1"});
  EXPECT_EQ(e.exit_code, 2) << e.err;
  EXPECT_NE(e.err.find(empty + " is empty; a release is one non-empty archive file"), std::string::npos) << e.err;
  auto d = f.cli({"rollout", "start", "--service", "demo", "--version", "v1", "--release", f.dir()});
  EXPECT_EQ(d.exit_code, 2) << d.err;
  EXPECT_NE(d.err.find(f.dir() + " is not a regular file"), std::string::npos) << d.err;
}
