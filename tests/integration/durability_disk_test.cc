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
  auto r = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release", rel,
                  "--batches", "1", "--max-failures", "0", "--min-healthy-time", "300"});
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
  EXPECT_EQ(f.cli({"status"}).exit_code, 0);

  // Space back: the same release goes through.
  ::unlink(filler.c_str());
  auto r2 = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--batches", "1",
                   "--min-healthy-time", "300", "--wait"});
  EXPECT_EQ(r2.exit_code, 0) << r2.out << r2.err << f.diagnostics();
  EXPECT_EQ(f.served_version(0), "v2");
}

}  // namespace
