// The coordinator's store around operator commands and checkpoints, on real processes: an
// operator command's audit row is committed with the rollout step it causes (not after it), so
// it is there after a SIGKILL right after the reply, once; and the coordinator checkpoints its
// WAL at rest, after a rollout ended (docs/GUARANTEES.md, 3). How many fsyncs each costs is
// counted by StoreSync.* (tests/unit/store_sync_test.cc).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/fleet.h"

namespace gantry::testing {
namespace {

using nlohmann::json;

// Audit rows of `command` for service demo with decision "ok".
int ok_rows(Fleet& f, const std::string& command, json* all = nullptr) {
  auto a = json_of(f.cli({"--json", "audit", "--limit", "1000"}, 10000));
  if (all) *all = a;
  int n = 0;
  if (!a.contains("audit")) return -1;
  for (const auto& r : a["audit"]) {
    if (r.value("command", "") == command && r.value("target", "") == "demo" && r.value("decision", "") == "ok") ++n;
  }
  return n;
}

}  // namespace

TEST(CoordinatorStore, CommandAuditRowsSurviveASigkillRightAfterTheReplyAndTheWalIsCheckpointedAtRest) {
  Fleet f(2);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();
  ASSERT_EQ(ok_rows(f, "rollout.start"), 1);

  // A rollout that stays active (it waits for a promote after its first batch); the
  // coordinator is killed as soon as the start is answered.
  const auto rel = f.make_release("v2", "healthy");
  auto r = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches",
                  "1,1", "--pause-after", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  const uint64_t id = json_of(r).value("id", 0);
  ASSERT_GT(id, 0u) << r.out;
  f.kill_coordinator(SIGKILL);
  f.start_coordinator();
  json audit;
  EXPECT_EQ(ok_rows(f, "rollout.start", &audit), 2) << audit.dump(1);
  ASSERT_FALSE(is_terminal_phase(rollout_get(f, id).value("phase", ""))) << f.diagnostics();

  // A control command: its audit row and its "asked to" event ride in its step.
  auto a = f.cli({"rollout", "abort", "--service", "demo"});
  ASSERT_EQ(a.exit_code, 0) << a.out << a.err << f.diagnostics();
  f.kill_coordinator(SIGKILL);
  const std::string log_before = f.coordinator_log();
  f.start_coordinator();
  EXPECT_EQ(ok_rows(f, "rollout.abort", &audit), 1) << audit.dump(1);
  const auto ro = rollout_get(f, id);
  EXPECT_EQ(ro.value("phase", ""), "aborted") << ro.dump(1);
  EXPECT_EQ(count_of(events_text(ro), "asked to abort"), 1) << events_text(ro);

  // A refused command is audited on its own, with its reason.
  auto refused = f.cli({"rollout", "pause", "--service", "demo"});
  EXPECT_NE(refused.exit_code, 0);
  bool saw_refusal = false;
  ok_rows(f, "rollout.pause", &audit);
  for (const auto& row : audit["audit"]) {
    saw_refusal |= row.value("command", "") == "rollout.pause" && row.value("decision", "").rfind("refused: ", 0) == 0;
  }
  EXPECT_TRUE(saw_refusal) << audit.dump(1);

  // No rollout is active and nothing more is written: the coordinator checkpoints its WAL.
  const std::string line = "WAL checkpointed at rest";
  EXPECT_TRUE(wait_until([&] { return count_of(f.coordinator_log(), line) > count_of(log_before, line); }, 60000, 200))
      << f.diagnostics();
  // The record reads the same afterwards.
  EXPECT_EQ(ok_rows(f, "rollout.start"), 2);
  EXPECT_EQ(rollout_get(f, id).value("phase", ""), "aborted");
}

}  // namespace gantry::testing
