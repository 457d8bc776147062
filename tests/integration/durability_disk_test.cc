// Disk faults: the agent's state dir is a small tmpfs that is then filled up. The journal write
// fails (ENOSPC); the host must keep serving its current release, the error must reach the
// coordinator ("state write failed: ..."), and the coordinator must keep serving. Once space is
// back, the next rollout works.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/fleet.h"

using namespace gantry::testing;

namespace {

// A tmpfs mounted on `dir` for the lifetime of the object (lazily unmounted, also on failure).
class TmpfsMount {
 public:
  TmpfsMount(const std::string& dir, const std::string& size) : dir_(dir) {
    if (::geteuid() != 0) {
      error_ = "mounting a tmpfs needs root";
      return;
    }
    const std::string opts = "size=" + size + ",mode=0700";
    if (::mount("gantry-test", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      error_ = std::string("mount tmpfs on ") + dir + ": " + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~TmpfsMount() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;
  const std::string& error() const { return error_; }

 private:
  std::string dir_;
  std::string error_;
  bool mounted_ = false;
};

TEST(DiskFault, FullStateDirKeepsTheHostServingAndReportsTheError) {
  FleetOptions o;
  o.min_healthy_ms = 300;
  o.heartbeat_interval_ms = 200;
  o.insecure = kInsecure;
  Fleet f(1, o);
  // Declared after the fleet: unmounted before the fleet's temp dir is removed.
  TmpfsMount mnt(f.agent_dir(0) + "/state", "256k");
  if (!mnt.error().empty()) GTEST_SKIP() << "disk fault test skipped: " << mnt.error();

  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();
  const auto pid = f.service_pid(0);
  ASSERT_TRUE(pid.has_value());

  // Fill the state filesystem to the last byte.
  const std::string filler = f.agent_dir(0) + "/state/filler";
  run({"dd", "if=/dev/zero", "of=" + filler, "bs=4k", "count=1000"}, 20000);  // stops at ENOSPC
  ASSERT_NE(run({"sh", "-c", "echo x > '" + f.agent_dir(0) + "/state/probe'"}).exit_code, 0) << "tmpfs is not full";

  const auto rel = f.make_release("v2", "healthy");
  auto r = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches",
                  "1", "--max-failures", "0", "--min-healthy-time", "300"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const uint64_t id = json_of(r).value("id", 0ULL);
  auto ro = wait_rollout_end(f, id, 60000);
  ASSERT_TRUE(is_terminal_phase(ro.value("phase", ""))) << ro.dump(2) << f.diagnostics();
  EXPECT_NE(ro.value("phase", ""), "succeeded") << ro.dump(2);
  ASSERT_FALSE(ro["hosts"].empty());
  EXPECT_EQ(ro["hosts"][0].value("state", ""), "failed") << ro.dump(2);
  EXPECT_EQ(ro["hosts"][0].value("message", "").rfind("state write failed: ", 0), 0u) << ro.dump(2);

  // The host never stopped serving v1 and the record says v1.
  EXPECT_EQ(f.served_version(0), "v1") << f.diagnostics();
  EXPECT_EQ(f.service_pid(0), pid) << "the service was restarted although nothing could be journaled";
  EXPECT_EQ(inspect_root(f.root(0)).current, "v1");
  EXPECT_EQ(recorded_version(hosts_json(f), f.host_id(0)), "v1");
  // The daemons are still up and the coordinator still answers.
  EXPECT_TRUE(f.agent_running(0)) << f.diagnostics();
  EXPECT_TRUE(f.coordinator_running());
  {
    auto st = f.cli({"status"});
    EXPECT_EQ(st.exit_code, 0) << st.out << st.err;
  }

  // Space back: the same release goes through.
  ::unlink(filler.c_str());
  auto r2 = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--batches", "1", "--min-healthy-time",
                   "300", "--wait"});
  EXPECT_EQ(r2.exit_code, 0) << r2.out << r2.err << f.diagnostics();
  EXPECT_EQ(f.served_version(0), "v2");
}

}  // namespace

namespace {

// The coordinator's own disk fills up while a rollout waits for promotion. The promotion cannot
// be made durable, so it must be refused with the store's error and leave nothing half-done:
// the rollout stays as the store has it (still waiting, nothing more ordered, the second host on
// v1), the coordinator keeps serving, and once space is back the same promotion goes through.
TEST(DiskFault, FullCoordinatorDiskRefusesTheStepAndKeepsTheRecord) {
  FleetOptions o;
  o.min_healthy_ms = 200;
  o.heartbeat_interval_ms = 200;
  o.insecure = kInsecure;
  Fleet f(2, o);
  TmpfsMount mnt(f.state_dir(), "16m");
  if (!mnt.error().empty()) GTEST_SKIP() << "disk fault test skipped: " << mnt.error();

  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();

  const auto rel = f.make_release("v2", "healthy");
  auto start = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release", rel,
                      "--batches", "1,100%", "--pause-after", "0", "--min-healthy-time", "200"});
  ASSERT_EQ(start.exit_code, 0) << start.out << start.err;
  const uint64_t id = json_of(start).value("id", 0ULL);
  auto get = [&] { return json_of(f.cli({"--json", "rollout", "show", std::to_string(id)})); };
  ASSERT_TRUE(wait_until([&] { return get().value("waiting_promote", false); }, 30000)) << f.diagnostics();
  const auto before = get();
  ASSERT_EQ(before["counts"].value("healthy", 0), 1) << before.dump(2);
  ASSERT_EQ(before["counts"].value("pending", 0), 1) << before.dump(2);
  int waiting = -1;  // the host of the second batch
  for (int i = 0; i < 2; ++i)
    if (f.served_version(i) == "v1") waiting = i;
  ASSERT_GE(waiting, 0) << f.diagnostics();

  // Fill the coordinator's filesystem to the last byte.
  const std::string filler = f.state_dir() + "/filler";
  run({"dd", "if=/dev/zero", "of=" + filler, "bs=64k", "count=1000"}, 20000);  // stops at ENOSPC
  ASSERT_NE(run({"sh", "-c", "echo x > '" + f.state_dir() + "/probe'"}).exit_code, 0) << "tmpfs is not full";

  auto refused = f.cli({"rollout", "promote", std::to_string(id)});
  EXPECT_NE(refused.exit_code, 0) << "promotion acknowledged although it could not be stored\n"
                                  << refused.out << refused.err;
  EXPECT_NE((refused.out + refused.err).find("full"), std::string::npos) << refused.out << refused.err;
  EXPECT_TRUE(f.coordinator_running()) << f.diagnostics();

  // Nothing moved: still waiting for promotion, the second host neither ordered nor updated.
  const auto after = get();
  EXPECT_TRUE(after.value("waiting_promote", false)) << after.dump(2);
  EXPECT_EQ(after.value("phase", ""), "paused") << after.dump(2);
  EXPECT_EQ(after["counts"], before["counts"]) << after.dump(2);
  EXPECT_EQ(f.served_version(waiting), "v1");
  {
    auto st2 = f.cli({"status"});
    EXPECT_EQ(st2.exit_code, 0) << st2.out << st2.err;
  }

  // Space back: the same promotion goes through and the rollout finishes.
  ::unlink(filler.c_str());
  auto promoted = f.cli({"rollout", "promote", std::to_string(id)});
  ASSERT_EQ(promoted.exit_code, 0) << promoted.out << promoted.err << f.diagnostics();
  auto w = f.cli({"rollout", "watch", std::to_string(id)});
  EXPECT_EQ(w.exit_code, 0) << w.out << w.err << f.diagnostics();
  for (int i = 0; i < 2; ++i) EXPECT_EQ(f.served_version(i), "v2") << "host " << i;

  // The store agrees after a restart: the step refused while the disk was full left no trace.
  f.restart_coordinator();
  const auto reloaded = get();
  EXPECT_EQ(reloaded.value("phase", ""), "succeeded") << reloaded.dump(2);
  EXPECT_EQ(reloaded["counts"].value("healthy", 0), 2) << reloaded.dump(2);
}

}  // namespace
