#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "agent/driver/binary_driver.h"
#include "agent_test_util.h"
#include "common/util/fs.h"
#include "common/util/sha256.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

struct DriverFixture : ::testing::Test {
  TempDir t;
  SystemClock clock;
  RealProcessRunner runner;
  ServiceConfig cfg;
  std::unique_ptr<BinaryDriver> d;

  void SetUp() override {
    cfg.name = "web";
    cfg.root = t / "root";
    cfg.restart_command = "env | grep ^GANTRY_ | sort > \"$GANTRY_ROOT/restart.env\"";
    cfg.restart_timeout_ms = 5000;
    std::filesystem::create_directories(cfg.root + "/releases");
    make();
  }
  void make() { d = std::make_unique<BinaryDriver>(cfg, runner, clock); }

  // Builds a release artifact with real tar and puts it where a finished download would be.
  ReleaseId download(const std::string& version, bool complete = true) {
    std::string src = t / ("src-" + version);
    write_text(src + "/bin/app", "#!/bin/sh\necho " + version + "\n", 0755);
    write_text(src + "/VERSION", version);
    std::string bytes = make_tar(src, t / (version + ".tar"));
    ReleaseId r{"web", version, sha256_hex(bytes), bytes.size()};
    std::filesystem::create_directories(cfg.root + "/downloads");
    write_text(complete ? d->artifact_path(r.sha256) : d->partial_artifact_path(r.sha256), bytes);
    return r;
  }
};

}  // namespace

TEST_F(DriverFixture, StagesActivatesAndReportsCurrent) {
  EXPECT_EQ(*d->current_version(), "");
  ReleaseId r = download("v1", false);
  ASSERT_TRUE(d->finish_download(r).ok());
  EXPECT_TRUE(fs::exists(d->artifact_path(r.sha256)));
  ASSERT_TRUE(d->stage(r).ok());
  EXPECT_TRUE(d->has_release(r));
  EXPECT_FALSE(fs::exists(d->artifact_path(r.sha256))) << "artifact removed once installed";
  struct stat st;
  ASSERT_EQ(::stat((cfg.root + "/releases/v1/bin/app").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR);
  auto marker = nlohmann::json::parse(read_text(cfg.root + "/releases/v1/.gantry-release"));
  EXPECT_EQ(marker["sha256"], r.sha256);
  EXPECT_EQ(marker["version"], "v1");
  EXPECT_TRUE(std::filesystem::is_empty(cfg.root + "/staging"));

  ASSERT_TRUE(d->activate("v1").ok());
  EXPECT_EQ(*fs::read_symlink(cfg.root + "/current"), "releases/v1");
  EXPECT_EQ(*d->current_version(), "v1");
  EXPECT_FALSE(d->activate("v9").ok());
  EXPECT_EQ(*d->current_version(), "v1");
}

TEST_F(DriverFixture, DigestMismatchDeletesTheDownload) {
  ReleaseId r = download("v1", false);
  r.sha256 = std::string(64, 'f');
  std::rename(d->partial_artifact_path(sha256_hex(read_text(t / "v1.tar"))).c_str(),
              d->partial_artifact_path(r.sha256).c_str());
  Status st = d->finish_download(r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message.rfind("digest mismatch", 0), 0u) << st.error().message;
  EXPECT_FALSE(fs::exists(d->partial_artifact_path(r.sha256)));
}

// The digest the fetcher computed while writing is checked instead of reading the file back.
TEST_F(DriverFixture, DigestHashedWhileDownloadingIsChecked) {
  ReleaseId r = download("v1", false);
  Status st = d->finish_download(r, std::string(64, 'e'));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message.rfind("digest mismatch", 0), 0u) << st.error().message;
  EXPECT_FALSE(fs::exists(d->partial_artifact_path(r.sha256)));
  r = download("v1", false);
  ASSERT_TRUE(d->finish_download(r, r.sha256).ok());
  EXPECT_TRUE(fs::exists(d->artifact_path(r.sha256)));
}

TEST_F(DriverFixture, RefusesSameVersionWithAnotherDigest) {
  ReleaseId r = download("v1");
  ASSERT_TRUE(d->stage(r).ok());
  ReleaseId other = r;
  other.sha256 = std::string(64, 'e');
  Status st = d->check_installable(other);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "version v1 already installed with another digest");
}

TEST_F(DriverFixture, BadArchiveLeavesNothingStaged) {
  std::filesystem::create_directories(cfg.root + "/downloads");
  std::string bytes = tar_header("../evil", '0', 1) + tar_data("x") + tar_end();
  ReleaseId r{"web", "v1", sha256_hex(bytes), bytes.size()};
  write_text(d->artifact_path(r.sha256), bytes);
  EXPECT_FALSE(d->stage(r).ok());
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v1"));
  EXPECT_FALSE(fs::exists(cfg.root + "/evil"));
  EXPECT_TRUE(std::filesystem::is_empty(cfg.root + "/staging"));
}

TEST_F(DriverFixture, RestartRunsTheCommandWithTheGantryEnvironment) {
  ASSERT_TRUE(d->restart("v7").ok());
  std::string env = read_text(cfg.root + "/restart.env");
  EXPECT_NE(env.find("GANTRY_SERVICE=web\n"), std::string::npos);
  EXPECT_NE(env.find("GANTRY_VERSION=v7\n"), std::string::npos);
  EXPECT_NE(env.find("GANTRY_ROOT=" + cfg.root + "\n"), std::string::npos);
  EXPECT_NE(env.find("GANTRY_RELEASE_DIR=" + cfg.root + "/current\n"), std::string::npos);

  // The same, prepared ahead of the swap and started after it.
  auto prepared = d->prepare_restart("v8");
  prepared->start();
  ASSERT_TRUE(prepared->finish().ok());
  env = read_text(cfg.root + "/restart.env");
  EXPECT_NE(env.find("GANTRY_VERSION=v8\n"), std::string::npos);
  EXPECT_NE(env.find("GANTRY_RELEASE_DIR=" + cfg.root + "/current\n"), std::string::npos);
  EXPECT_EQ(env.find("GANTRY_GATED_COMMAND"), std::string::npos) << "the variable that carried the command is gone";
  d->prepare_restart("v9").reset();
  EXPECT_EQ(read_text(cfg.root + "/restart.env"), env) << "dropped before start: the command did not run";

  cfg.restart_command = "echo boom >&2; exit 3";
  make();
  prepared = d->prepare_restart("v7");
  prepared->start();
  Status st = prepared->finish();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "restart command exited with 3: boom");
  st = d->restart("v7");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "restart command exited with 3: boom");

  cfg.restart_command = "sleep 5";
  cfg.restart_timeout_ms = 200;
  make();
  st = d->restart("v7");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("timed out"), std::string::npos);
}

TEST_F(DriverFixture, PruneKeepsNewestAndProtected) {
  FakeClock fake;
  d = std::make_unique<BinaryDriver>(cfg, runner, fake);
  for (const char* v : {"v1", "v2", "v3", "v4", "v5"}) {
    ASSERT_TRUE(d->stage(download(v)).ok());
    fake.advance(1000);
  }
  ASSERT_TRUE(d->prune(2, {"v1", "v4"}).ok());
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v5"));
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v4"));
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v1")) << "protected";
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v2"));
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v3"));
}

TEST_F(DriverFixture, CleanupRemovesInterruptedStaging) {
  std::filesystem::create_directories(cfg.root + "/staging/v2.abcd/bin");
  ASSERT_TRUE(d->cleanup().ok());
  EXPECT_TRUE(std::filesystem::is_empty(cfg.root + "/staging"));
}
