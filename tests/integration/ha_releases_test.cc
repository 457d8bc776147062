// Releases on every coordinator (issue 23; docs/HIGH_AVAILABILITY.md): with three coordinators
// on etcd, `gantry release upload` is acknowledged only once every registered coordinator holds
// the artifact, so a leader lost right after an upload leaves a copy on every standby. A standby
// that stops answering holds uploads up only while it is registered (its lease's TTL), and when
// it comes back it copies what it missed.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "common/util/sha256.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/fleet.h"
#include "tests/support/ha_fleet.h"

using namespace gantry::testing;

namespace {

constexpr int kLeaseTtlS = 3;

bool holds(Fleet& f, int k, const std::string& sha) {
  return std::filesystem::exists(f.dir() + "/coordinator-" + std::to_string(k + 1) + "/artifacts/" + sha);
}

// Sends SIGCONT to a coordinator it stopped when the test ends, however it ends.
struct Resume {
  pid_t pid = -1;
  ~Resume() {
    if (pid > 0) ::kill(pid, SIGCONT);
  }
};

TEST(HaReleases, AnUploadIsAcknowledgedOnceEveryCoordinatorHoldsItAndAStoppedStandbyHoldsItUpOnlyWhileRegistered) {
  EtcdCluster etcd(1);
  Fleet f(0, ha_fleet_options(etcd.uri(), kLeaseTtlS));
  ASSERT_NO_THROW(f.start_coordinator()) << f.diagnostics();
  const int lead = f.leader(30000);
  ASSERT_GE(lead, 0) << f.diagnostics();

  // v1: when the CLI returns, all three hold it; until then it said whom it waited for.
  const std::string v1 = f.make_release("v1", "healthy");
  const std::string sha1 = gantry::sha256_hex(read_file(v1));
  auto r = f.cli({"release", "upload", v1, "--service", "demo", "--version", "v1"}, 60000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  EXPECT_NE(r.err.find("waiting for"), std::string::npos) << r.err;
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(holds(f, k, sha1)) << "coordinator " << k + 1 << "\n" << r.err;

  // A standby stopped: registered until its lease runs out, and the upload waits for it. Not
  // the first of the CLI's endpoints: the CLI would wait out its answer timeout there first.
  const int stopped = lead == 2 ? 1 : 2;
  const std::string stopped_name = "c" + std::to_string(stopped + 1);
  Resume resume{f.coordinator_pid_at(stopped)};
  ASSERT_EQ(::kill(resume.pid, SIGSTOP), 0);
  const std::string v2 = f.make_release("v2", "healthy");
  const std::string sha2 = gantry::sha256_hex(read_file(v2));
  r = f.cli({"release", "upload", v2, "--service", "demo", "--version", "v2", "--copy-timeout", "1"}, 60000);
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("did not copy it within 1 s"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(stopped_name), std::string::npos) << r.err;
  // Asked again, with the default wait: acknowledged once the stopped one's lease has expired
  // (it is no longer a registered coordinator); the two others hold v2.
  r = f.cli({"release", "upload", v2, "--service", "demo", "--version", "v2"}, 60000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int k = 0; k < 3; ++k)
    if (k != stopped) EXPECT_TRUE(holds(f, k, sha2)) << "coordinator " << k + 1;
  EXPECT_FALSE(holds(f, stopped, sha2));

  // Resumed, it registers again and copies v2; the upload asked again is acknowledged.
  ASSERT_EQ(::kill(resume.pid, SIGCONT), 0);
  resume.pid = -1;
  EXPECT_TRUE(wait_until([&] { return holds(f, stopped, sha2); }, 30000, 100)) << f.diagnostics();
  r = f.cli({"release", "upload", v2, "--service", "demo", "--version", "v2", "--copy-timeout", "20"}, 60000);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  EXPECT_EQ(r.err.find("did not copy"), std::string::npos) << r.err;
}

}  // namespace
