// The traffic steps' order and failure semantics (agent/traffic/lifecycle.h), with a fake
// clock, a recording process runner and a scripted load balancer: no processes, no sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <set>

#include "agent/traffic/lifecycle.h"

using namespace gantry;
using namespace gantry::agent::traffic;

namespace {

// Records every command with the phase it ran for; fails the ones named in `fail`.
class RecordingRunner final : public ProcessRunner {
 public:
  std::vector<std::string>& log;
  std::map<std::string, std::map<std::string, std::string>> env_of;  // by command
  std::set<std::string> fail, time_out;
  explicit RecordingRunner(std::vector<std::string>& l) : log(l) {}
  Expected<ProcessResult> run_shell(const std::string& command, const std::map<std::string, std::string>& env,
                                    Millis) override {
    log.push_back("cmd:" + command);
    env_of[command] = env;
    ProcessResult r;
    r.exit_code = fail.count(command) ? 3 : 0;
    r.timed_out = time_out.count(command) > 0;
    if (r.exit_code) r.output = command + " said no\n";
    return r;
  }
};

// A balancer whose answers are scripted: sessions left per stat() call, status after ready().
class ScriptedBalancer final : public LoadBalancer {
 public:
  std::vector<std::string>& log;
  std::deque<uint64_t> sessions;     // successive stat() session counts while draining
  std::deque<std::string> statuses;  // successive statuses after ready()
  bool drained = false, fail_drain = false, fail_ready = false, unreachable = false;
  explicit ScriptedBalancer(std::vector<std::string>& l) : log(l) {}
  std::string describe() const override { return "lb"; }
  Status drain() override {
    log.push_back("lb:drain");
    if (fail_drain) return make_error("haproxy", "No such server.");
    drained = true;
    return Status::Ok();
  }
  Status ready() override {
    log.push_back("lb:ready");
    if (fail_ready) return make_error("haproxy", "refused");
    drained = false;
    return Status::Ok();
  }
  Expected<ServerStat> stat() override {
    log.push_back("lb:stat");
    if (unreachable) return make_error("io", "connect: Connection refused");
    ServerStat s;
    if (drained) {
      s.status = "DRAIN";
      if (!sessions.empty()) {
        s.sessions = sessions.front();
        if (sessions.size() > 1) sessions.pop_front();
      }
    } else {
      s.status = statuses.empty() ? "UP" : statuses.front();
      if (statuses.size() > 1) statuses.pop_front();
    }
    return s;
  }
};

class LifecycleTest : public ::testing::Test {
 protected:
  std::vector<std::string> log;
  RecordingRunner runner{log};
  FakeClock clock;
  std::shared_ptr<ScriptedBalancer> lb = std::make_shared<ScriptedBalancer>(log);
  LifecycleSettings s;
  StepContext ctx{"web", "/srv/web", "r1-h1", 1, "update", "v1", "v2"};
  std::vector<std::string> steps;

  LifecycleTest() {
    s.block_traffic = {"block", 1000};
    s.wait_inflight = {"wait", 1000};
    s.allow_traffic = {"allow", 1000};
    s.haproxy.socket = "/run/haproxy.sock";
    s.haproxy.backend = "be";
    s.haproxy.server = "web1";
    s.haproxy.drain_timeout_ms = 1000;
    s.haproxy.up_timeout_ms = 1000;
    s.haproxy.poll_ms = 100;
  }

  Lifecycle make(bool with_lb = true) {
    return Lifecycle(s, runner, with_lb ? lb : nullptr, clock, [this](Millis ms) {
      log.push_back("sleep:" + std::to_string(ms));
      clock.advance(ms);
    });
  }
  StepObserver observer() {
    return [this](const std::string& ph) { steps.push_back(ph); };
  }
  HostActs acts(Status verify = Status::Ok(), Status post = Status::Ok()) {
    HostActs a;
    a.swap = [this] {
      log.push_back("swap");
      return Status::Ok();
    };
    a.restart = [this] {
      log.push_back("restart");
      return Status::Ok();
    };
    a.verify = [this, verify] {
      log.push_back("verify");
      return verify;
    };
    a.verify_for = [this, post](Millis ms) {
      log.push_back("verify_for:" + std::to_string(ms));
      return post;
    };
    return a;
  }
  size_t count(const std::string& entry) const { return std::count(log.begin(), log.end(), entry); }
};

TEST_F(LifecycleTest, BlockDrainsThenWaitsUntilSessionsReachZeroThenRunsTheWaitCommand) {
  lb->sessions = {3, 1, 0};
  auto lc = make();
  ASSERT_TRUE(lc.block(ctx, observer()).ok());
  std::vector<std::string> want = {"cmd:block", "lb:drain",  "lb:stat", "sleep:100",
                                   "lb:stat",   "sleep:100", "lb:stat", "cmd:wait"};
  EXPECT_EQ(log, want);
  EXPECT_EQ(steps, (std::vector<std::string>{step::kDraining, step::kWaitingInflight}));
}

TEST_F(LifecycleTest, SessionsThatNeverDrainEndTheWaitAtTheDrainTimeoutWithoutFailing) {
  lb->sessions = {5};
  auto lc = make();
  const Millis t0 = clock.now_ms();
  ASSERT_TRUE(lc.block(ctx, observer()).ok());
  EXPECT_EQ(clock.now_ms() - t0, 1000);
  EXPECT_EQ(log.back(), "cmd:wait");
}

TEST_F(LifecycleTest, AFailedBlockCommandAllowsTrafficBackAndFailsWithCodeDrain) {
  runner.fail = {"block"};
  auto lc = make();
  Status st = lc.block(ctx, observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, failure::kDrain);
  EXPECT_NE(st.error().message.find("block_traffic command exited with 3"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("traffic allowed back"), std::string::npos);
  EXPECT_EQ(log, (std::vector<std::string>{"cmd:block", "cmd:allow", "lb:ready"}));
}

TEST_F(LifecycleTest, AnUnreachableHaproxyFailsTheDrainAndSaysWhetherTrafficCameBack) {
  lb->unreachable = true;
  lb->fail_ready = true;
  auto lc = make();
  Status st = lc.block(ctx, observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, failure::kDrain);
  EXPECT_NE(st.error().message.find("Connection refused"), std::string::npos);
  EXPECT_NE(st.error().message.find("allowing traffic back also failed"), std::string::npos) << st.error().message;
}

TEST_F(LifecycleTest, AFailedWaitCommandFailsTheDrain) {
  runner.time_out = {"wait"};
  auto lc = make();
  Status st = lc.block(ctx, observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, failure::kDrain);
  EXPECT_NE(st.error().message.find("timed out"), std::string::npos);
  EXPECT_EQ(log.back(), "lb:ready");
}

TEST_F(LifecycleTest, AllowRunsTheCommandSetsReadyAndWaitsForHaproxyToSayUp) {
  lb->drained = true;
  lb->statuses = {"DOWN", "DOWN 1/2", "UP"};
  auto lc = make();
  ASSERT_TRUE(lc.allow(ctx, acts(), observer()).ok());
  EXPECT_EQ(log, (std::vector<std::string>{"cmd:allow", "lb:ready", "lb:stat", "sleep:100", "lb:stat", "sleep:100",
                                           "lb:stat"}));
  EXPECT_EQ(steps, (std::vector<std::string>{step::kAllowingTraffic, step::kTrafficAllowed}));
}

TEST_F(LifecycleTest, AServerHaproxyNeverReportsUpIsAFailedAllow) {
  lb->statuses = {"DOWN"};
  auto lc = make();
  Status st = lc.allow(ctx, acts(), observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, failure::kAllowTraffic);
  EXPECT_NE(st.error().message.find("not UP within 1000 ms (status DOWN)"), std::string::npos) << st.error().message;
  EXPECT_EQ(steps, (std::vector<std::string>{step::kAllowingTraffic}));  // never "traffic_allowed"
}

TEST_F(LifecycleTest, AFailedAllowCommandIsAFailedAllowAndHaproxyIsNotMadeReady) {
  runner.fail = {"allow"};
  auto lc = make();
  Status st = lc.allow(ctx, acts(), observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, failure::kAllowTraffic);
  EXPECT_EQ(count("lb:ready"), 0u);
}

TEST_F(LifecycleTest, PostAllowVerificationRunsItsCommandThenTheProbesForTheirTime) {
  s.post_allow = {"post", 1000};
  s.post_allow_healthy_ms = 1500;
  auto lc = make();
  ASSERT_TRUE(lc.allow(ctx, acts(), observer()).ok());
  EXPECT_EQ(log.back(), "verify_for:1500");
  EXPECT_EQ(log[log.size() - 2], "cmd:post");
  EXPECT_EQ(steps.back(), step::kVerifyingTraffic);
}

TEST_F(LifecycleTest, AFailedPostAllowVerificationHasItsOwnCode) {
  s.post_allow_healthy_ms = 500;
  auto lc = make();
  Status st = lc.allow(ctx, acts(Status::Ok(), make_error("unhealthy", "health returned 500")), observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, failure::kPostAllow);
}

TEST_F(LifecycleTest, RunOrdersEveryStepAndAllowsTrafficOnlyAfterVerification) {
  lb->sessions = {0};
  auto lc = make();
  ASSERT_TRUE(lc.run(ctx, acts(), /*traffic_blocked=*/false, observer()).ok());
  auto pos = [&](const std::string& e) { return std::find(log.begin(), log.end(), e) - log.begin(); };
  EXPECT_LT(pos("cmd:block"), pos("lb:drain"));
  EXPECT_LT(pos("cmd:wait"), pos("swap"));
  EXPECT_LT(pos("swap"), pos("restart"));
  EXPECT_LT(pos("restart"), pos("verify"));
  EXPECT_LT(pos("verify"), pos("cmd:allow"));
  EXPECT_LT(pos("cmd:allow"), pos("lb:ready"));
  EXPECT_EQ(steps, (std::vector<std::string>{step::kDraining, step::kWaitingInflight, "swapping", "restarting",
                                             "verifying", step::kAllowingTraffic, step::kTrafficAllowed}));
}

TEST_F(LifecycleTest, RunWithTrafficAlreadyBlockedDoesNotDrainAgain) {
  auto lc = make();
  ASSERT_TRUE(lc.run(ctx, acts(), /*traffic_blocked=*/true, observer()).ok());
  EXPECT_EQ(count("cmd:block"), 0u);
  EXPECT_EQ(count("lb:drain"), 0u);
}

TEST_F(LifecycleTest, AnUnverifiedReleaseNeverGetsTraffic) {
  auto lc = make();
  Status st = lc.run(ctx, acts(make_error("unhealthy", "health returned 500")), true, observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "unhealthy");
  EXPECT_EQ(count("cmd:allow"), 0u);
  EXPECT_EQ(count("lb:ready"), 0u);
}

TEST_F(LifecycleTest, ARevertGoesOnWhenItsDrainFailsAndSaysSo) {
  runner.fail = {"block"};
  ctx.kind = "revert";
  auto lc = make();
  Status st = lc.run(ctx, acts(make_error("unhealthy", "v1 unhealthy too")), false, observer());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(count("swap"), 1u);  // went on
  EXPECT_NE(st.error().message.find("drain failed"), std::string::npos) << st.error().message;
  ctx.kind = "update";
  log.clear();
  Status upd = lc.run(ctx, acts(), false, observer());
  EXPECT_EQ(upd.error().code, failure::kDrain);
  EXPECT_EQ(count("swap"), 0u);  // an update stops before the swap
}

TEST_F(LifecycleTest, CommandsSeeThePhaseServiceVersionsAndOrderKind) {
  s.block_traffic = {"block", 1000};
  auto lc = make(/*with_lb=*/false);
  ctx.kind = "rollback";
  ASSERT_TRUE(lc.block(ctx, observer()).ok());
  auto e = runner.env_of["block"];
  EXPECT_EQ(e["GANTRY_PHASE"], "draining");
  EXPECT_EQ(e["GANTRY_SERVICE"], "web");
  EXPECT_EQ(e["GANTRY_FROM_VERSION"], "v1");
  EXPECT_EQ(e["GANTRY_TO_VERSION"], "v2");
  EXPECT_EQ(e["GANTRY_ORDER_KIND"], "rollback");
  EXPECT_EQ(e["GANTRY_ORDER_ID"], "r1-h1");
  EXPECT_EQ(e["GANTRY_ROLLOUT_ID"], "1");
  EXPECT_EQ(e["GANTRY_ROOT"], "/srv/web");
  EXPECT_EQ(e["GANTRY_HAPROXY_SERVER"], "be/web1");
  EXPECT_EQ(runner.env_of["wait"]["GANTRY_PHASE"], "waiting_inflight");
}

TEST_F(LifecycleTest, DrainDelayWaitsAFixedTimeWhenNoBalancerCounts) {
  s = LifecycleSettings{};
  s.drain_delay_ms = 750;
  auto lc = make(/*with_lb=*/false);
  const Millis t0 = clock.now_ms();
  ASSERT_TRUE(lc.block(ctx, observer()).ok());
  EXPECT_EQ(clock.now_ms() - t0, 750);
}

TEST_F(LifecycleTest, NothingConfiguredIsNoStepAtAll) {
  s = LifecycleSettings{};
  auto lc = make(/*with_lb=*/false);
  EXPECT_FALSE(lc.any());
  ASSERT_TRUE(lc.block(ctx, observer()).ok());
  ASSERT_TRUE(lc.allow(ctx, acts(), observer()).ok());
  EXPECT_TRUE(log.empty());
  EXPECT_TRUE(steps.empty());
}

TEST(LoadBalancerFactory, RefusesNamesThatCouldCarryASecondCommand) {
  HaproxySettings h{"/run/haproxy.sock", "be", "web1; shutdown sessions", 1000, 1000, 100};
  EXPECT_FALSE(make_load_balancer(h).ok());
  h.server = "web1";
  h.socket = "example.com:9999";
  EXPECT_FALSE(make_load_balancer(h).ok());
  h.socket = "127.0.0.1:9999";
  auto lb = make_load_balancer(h);
  ASSERT_TRUE(lb.ok());
  EXPECT_NE(*lb, nullptr);
  h.socket = "";
  auto none = make_load_balancer(h);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
}

}  // namespace

namespace {

TEST(TrafficSettings, ConfigKeysSetTheStepsAndRefuseBadValues) {
  LifecycleSettings s;
  EXPECT_TRUE(is_setting_key("block_traffic_command"));
  EXPECT_TRUE(is_setting_key("haproxy_server"));
  EXPECT_FALSE(is_setting_key("restart_command"));
  ASSERT_TRUE(apply_setting(s, "block_traffic_command", "lb-ctl drain web1").ok());
  ASSERT_TRUE(apply_setting(s, "block_traffic_timeout_ms", "1500").ok());
  ASSERT_TRUE(apply_setting(s, "post_allow_healthy_ms", "2000").ok());
  ASSERT_TRUE(apply_setting(s, "haproxy_socket", "/run/haproxy/admin.sock").ok());
  EXPECT_FALSE(check_settings(s).ok());  // a socket needs its server
  ASSERT_TRUE(apply_setting(s, "haproxy_server", "be_web/web1").ok());
  EXPECT_TRUE(check_settings(s).ok());
  EXPECT_EQ(s.block_traffic.command, "lb-ctl drain web1");
  EXPECT_EQ(s.block_traffic.timeout_ms, 1500);
  EXPECT_EQ(s.haproxy.backend, "be_web");
  EXPECT_EQ(s.haproxy.server, "web1");
  EXPECT_TRUE(s.any());
  EXPECT_FALSE(apply_setting(s, "block_traffic_timeout_ms", "0").ok());
  EXPECT_FALSE(apply_setting(s, "drain_delay_ms", "soon").ok());
  EXPECT_FALSE(apply_setting(s, "haproxy_server", "web1").ok());
  EXPECT_FALSE(apply_setting(s, "haproxy_server", "be/web1 state maint").ok());
  EXPECT_FALSE(apply_setting(s, "haproxy_socket", "haproxy.local:9999").ok());
}

}  // namespace

#include "agent/config/agent_config.h"
#include "agent_test_util.h"

namespace {

TEST(TrafficSettings, TheAgentConfigFileCarriesThem) {
  gantry::agent::testing::TempDir t;
  auto parse = [&](const std::string& extra) {
    gantry::agent::testing::write_text(t / "agent.conf",
                                       "host_id = h1\ninsecure_dev = true\n[service.web]\nroot = /srv/web\n"
                                       "restart_command = true\n" +
                                           extra);
    std::string path = t / "agent.conf";
    const char* argv[] = {"gantry-agent", "--config", path.c_str()};
    return gantry::agent::parse_args(3, argv);
  };
  auto ok = parse(
      "haproxy_socket = 127.0.0.1:9999\nhaproxy_server = be/web1\nblock_traffic_command = lb drain\n"
      "allow_traffic_timeout_ms = 5000\npost_allow_healthy_ms = 1000\n");
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  const auto& tr = ok->config.services.at("web").traffic;
  EXPECT_EQ(tr.haproxy.socket, "127.0.0.1:9999");
  EXPECT_EQ(tr.haproxy.server, "web1");
  EXPECT_EQ(tr.block_traffic.command, "lb drain");
  EXPECT_EQ(tr.allow_traffic.timeout_ms, 5000);
  EXPECT_EQ(tr.post_allow_healthy_ms, 1000);
  auto bad = parse("haproxy_server = web1\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("haproxy_server"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(parse("haproxy_socket = /run/h.sock\n").ok());  // without its server
}

}  // namespace
