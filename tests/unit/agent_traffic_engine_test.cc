// The order engine with traffic steps (agent/traffic/lifecycle.h) against real dirs, real tar
// archives and real shell commands: every step command appends its GANTRY_* environment to a
// file, so the tests read the exact order the host went through. Only the coordinator is played.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "agent/core/agent.h"
#include "agent/driver/binary_driver.h"
#include "agent_test_util.h"
#include "common/util/fs.h"
#include "common/util/sha256.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

class HealthFileProbe : public Probe {
 public:
  explicit HealthFileProbe(std::string path) : path_(std::move(path)) {}
  std::string describe() const override { return path_; }
  Status check(Millis) override {
    auto t = fs::read_file(path_);
    if (t && *t == "ok\n") return Status::Ok();
    return make_error("probe", path_ + " says " + (t ? *t : std::string("nothing")));
  }

 private:
  std::string path_;
};

// `step <phase> <kind> <from>-><to>` for each step command, `restart <version>` for restarts.
const char* kLogStep =
    "echo \"$GANTRY_PHASE $GANTRY_ORDER_KIND $GANTRY_FROM_VERSION->$GANTRY_TO_VERSION\" >> \"$GANTRY_ROOT/steps\"";

class TrafficEngineTest : public ::testing::Test {
 protected:
  TempDir t;
  SystemClock clock;
  RealProcessRunner runner;
  MemoryStateStore store;
  ServiceConfig cfg;
  traffic::LifecycleSettings lc;
  std::map<std::string, std::pair<std::string, std::string>> artifacts;  // sha -> bytes
  std::vector<proto::Message> sent;
  size_t scanned = 0;
  std::unique_ptr<Agent> agent;

  void SetUp() override {
    cfg.name = "web";
    cfg.root = t / "root";
    cfg.restart_command =
        "cp \"$GANTRY_RELEASE_DIR/health\" \"$GANTRY_ROOT/health\" && echo restart $GANTRY_VERSION >> "
        "\"$GANTRY_ROOT/steps\"";
    cfg.restart_timeout_ms = 5000;
    cfg.probe_interval_ms = 20;
    cfg.min_healthy_ms = 60;
    cfg.healthy_deadline_ms = 400;
    std::filesystem::create_directories(cfg.root + "/releases");
    lc.block_traffic = {kLogStep, 5000};
    lc.wait_inflight = {kLogStep, 5000};
    lc.allow_traffic = {kLogStep, 5000};
  }

  void make_agent() {
    agent.reset();
    std::map<std::string, ServiceRuntime> svcs;
    ServiceRuntime rt;
    rt.config = cfg;
    rt.driver = std::make_shared<BinaryDriver>(cfg, runner, clock);
    rt.probes.push_back(std::make_shared<HealthFileProbe>(cfg.root + "/health"));
    auto sleep = [](Millis ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
    rt.lifecycle = std::make_shared<traffic::Lifecycle>(lc, runner, nullptr, clock, sleep);
    svcs.emplace("web", std::move(rt));
    agent = std::make_unique<Agent>(
        "host-1", std::map<std::string, std::string>{}, std::move(svcs), store, clock,
        [this](const proto::Message& m) { sent.push_back(m); }, sleep);
    ASSERT_TRUE(agent->start().ok());
  }

  proto::Order order(const std::string& id, const std::string& version, bool healthy = true,
                     std::string kind = "update") {
    std::string src = t / ("src-" + version);
    if (!fs::exists(src)) {
      write_text(src + "/bin/app", "#!/bin/sh\necho " + version + "\n", 0755);
      write_text(src + "/health", healthy ? "ok\n" : "broken\n");
    }
    std::string bytes = make_tar(src, t / (version + ".tar"));
    std::string sha = sha256_hex(bytes);
    artifacts[sha] = {bytes, sha};
    return proto::Order{id, 1, "web", kind, version, sha, bytes.size(), 0, 0, "", ""};
  }

  std::optional<proto::Report> run_until_report(const std::string& id) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      for (; scanned < sent.size(); ++scanned) {
        proto::Message m = sent[scanned];
        if (auto* r = std::get_if<proto::Report>(&m); r && r->order_id == id) {
          ++scanned;
          return *r;
        }
        if (auto* f = std::get_if<proto::FetchChunk>(&m)) {
          const std::string& b = artifacts.at(f->sha256).first;
          agent->handle(proto::Chunk{f->sha256, f->offset, b.size(), b.substr(f->offset, f->length)});
        }
      }
      agent->tick();
      if (scanned == sent.size()) agent->wait_for_worker(20);
    }
    return std::nullopt;
  }

  // Installs v1 (its own steps are then forgotten).
  void install_v1() {
    make_agent();
    agent->handle(order("o-1", "v1"));
    auto r = run_until_report("o-1");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->outcome, "succeeded") << r->message;
    std::filesystem::remove(cfg.root + "/steps");
    sent.clear();
    scanned = 0;
  }

  std::vector<std::string> steps() {
    std::vector<std::string> out;
    std::istringstream in(read_text(cfg.root + "/steps"));
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }
  std::vector<std::string> phases() {
    std::vector<std::string> out;
    for (const auto& m : sent)
      if (auto* p = std::get_if<proto::Progress>(&m)) out.push_back(p->phase);
    return out;
  }
  std::string current() {
    return fs::read_symlink(cfg.root + "/current").ok() ? *fs::read_symlink(cfg.root + "/current") : "";
  }
};

TEST_F(TrafficEngineTest, AnUpdateDrainsSwapsRestartsVerifiesAndOnlyThenAllowsTraffic) {
  install_v1();
  agent->handle(order("o-2", "v2"));
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded") << r->message;
  EXPECT_EQ(steps(), (std::vector<std::string>{"draining update v1->v2", "waiting_inflight update v1->v2", "restart v2",
                                               "allowing_traffic update v1->v2"}));
  EXPECT_EQ(phases(), (std::vector<std::string>{"fetching", "staging", "draining", "waiting_inflight", "swapping",
                                                "restarting", "verifying", "allowing_traffic", "traffic_allowed"}));
  for (const auto& m : sent)
    if (auto* p = std::get_if<proto::Progress>(&m)) {
      EXPECT_GT(p->at_ms, 0u) << p->phase;
    }
  EXPECT_TRUE(r->timings_ms.count("drain"));
}

TEST_F(TrafficEngineTest, AFailedDrainFailsTheOrderWithNothingChangedAndTrafficAllowedBack) {
  install_v1();
  lc.block_traffic.command = std::string(kLogStep) + "; exit 7";
  make_agent();
  agent->handle(order("o-2", "v2"));
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed");
  EXPECT_EQ(r->running_version, "v1");
  EXPECT_EQ(r->message.rfind("drain failed: block_traffic command exited with 7", 0), 0u) << r->message;
  EXPECT_NE(r->message.find("traffic allowed back"), std::string::npos);
  EXPECT_EQ(steps(), (std::vector<std::string>{"draining update v1->v2", "allowing_traffic update v1->v2"}));
  EXPECT_EQ(current(), "releases/v1");
}

TEST_F(TrafficEngineTest, ABadReleaseNeverGetsTrafficAndTheRevertAllowsTheOldOneBack) {
  install_v1();
  agent->handle(order("o-2", "v2", /*healthy=*/false));
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed_reverted") << r->message;
  EXPECT_EQ(r->running_version, "v1");
  // No drain for the revert: v2 never got traffic back.
  EXPECT_EQ(steps(), (std::vector<std::string>{"draining update v1->v2", "waiting_inflight update v1->v2", "restart v2",
                                               "restart v1", "allowing_traffic revert v2->v1"}));
}

TEST_F(TrafficEngineTest, AFailedAllowTrafficIsAFailedHostThatKeepsTheVerifiedRelease) {
  install_v1();
  lc.allow_traffic.command = std::string(kLogStep) + "; [ \"$GANTRY_TO_VERSION\" != v2 ]";
  make_agent();
  agent->handle(order("o-2", "v2"));
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed");
  EXPECT_EQ(r->running_version, "v2");
  EXPECT_EQ(r->message.rfind("allow traffic failed: allow_traffic command exited with 1", 0), 0u) << r->message;
  EXPECT_EQ(current(), "releases/v2");
  EXPECT_EQ(steps().back(), "allowing_traffic update v1->v2");  // no revert
}

TEST_F(TrafficEngineTest, AFailedPostAllowVerificationRevertsAndTheRevertDrainsFirst) {
  install_v1();
  lc.post_allow = {std::string(kLogStep) + "; [ \"$GANTRY_TO_VERSION\" != v2 ]", 5000};
  make_agent();
  agent->handle(order("o-2", "v2"));
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed_reverted") << r->message;
  EXPECT_EQ(r->message.rfind("post-allow verification failed", 0), 0u) << r->message;
  EXPECT_EQ(steps(), (std::vector<std::string>{"draining update v1->v2", "waiting_inflight update v1->v2", "restart v2",
                                               "allowing_traffic update v1->v2", "verifying_traffic update v1->v2",
                                               "draining revert v2->v1", "waiting_inflight revert v2->v1", "restart v1",
                                               "allowing_traffic revert v2->v1", "verifying_traffic revert v2->v1"}));
}

TEST_F(TrafficEngineTest, ARollbackToAnInstalledReleaseRunsTheSameSteps) {
  install_v1();
  agent->handle(order("o-2", "v2"));
  ASSERT_EQ(run_until_report("o-2")->outcome, "succeeded");
  std::filesystem::remove(cfg.root + "/steps");
  agent->handle(order("o-3", "v1", true, "rollback"));
  auto r = run_until_report("o-3");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded") << r->message;
  EXPECT_EQ(steps(), (std::vector<std::string>{"draining rollback v2->v1", "waiting_inflight rollback v2->v1",
                                               "restart v1", "allowing_traffic rollback v2->v1"}));
}

TEST_F(TrafficEngineTest, AJournalFailureAfterTheDrainAllowsTrafficBackBeforeFailing) {
  install_v1();
  // The staging record succeeds; the swapping record (written after the drain) fails.
  store.fail_next(1, make_error("disk_full", "write agent-state.json: No space left on device"), /*after=*/2);
  agent->handle(order("o-2", "v2"));
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed");
  EXPECT_EQ(r->running_version, "v1");
  EXPECT_NE(r->message.find("traffic allowed back"), std::string::npos) << r->message;
  EXPECT_EQ(steps(), (std::vector<std::string>{"draining update v1->v2", "waiting_inflight update v1->v2",
                                               "allowing_traffic update v1->v2"}));
}

}  // namespace
