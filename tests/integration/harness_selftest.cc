// Checks the end-to-end harness and the demo service's scripts without the daemons: a hand-made
// install root (releases/<v> unpacked from make-demo-release's tar, `current` symlink) driven
// through demo/restart-service and demo/stop-service exactly as an agent would drive it.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "tests/support/fleet.h"

namespace gantry::testing {
namespace {

namespace fs = std::filesystem;

std::string demo_binary() { return bin_dir() + "/demo/gantry-demo-service"; }
std::string restart_script() { return source_dir() + "/demo/restart-service"; }
std::string stop_script() { return source_dir() + "/demo/stop-service"; }

std::string make_release_tar(const TempDir& tmp, const std::string& version, const std::string& behaviour) {
  const std::string out = tmp.sub("artifacts/" + version + ".tar");
  const auto r = run({source_dir() + "/scripts/make-demo-release", "--version", version, "--behaviour", behaviour,
                      "--out", out, "--binary", demo_binary()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, out + "\n");
  return out;
}

// Unpacks a release into root/releases/<version> and points root/current at it (rename(2) of a
// fresh symlink, like the agent).
void install_release(const std::string& root, const std::string& tar, const std::string& version) {
  const std::string dir = root + "/releases/" + version;
  fs::create_directories(dir);
  const auto r = run({"tar", "-xf", tar, "-C", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string tmp_link = root + "/current.tmp";
  fs::remove(tmp_link);
  fs::create_symlink("releases/" + version, tmp_link);
  fs::rename(tmp_link, root + "/current");
}

std::optional<pid_t> pid_in(const std::string& root) {
  const std::string text = read_file(root + "/service.pid");
  if (text.empty()) return std::nullopt;
  return static_cast<pid_t>(std::stol(text));
}

bool version_is(int port, const std::string& version) {
  const auto r = http_get(port, "/version");
  return r && r->status == 200 && r->body == version + "\n";
}

// Stops whatever a test left running in `root`, even when an assertion bailed out early.
struct ServiceGuard {
  std::string root;
  ~ServiceGuard() {
    run({stop_script(), root}, 15000);
    if (const auto pid = pid_in(root); pid && pid_running(*pid)) ::kill(*pid, SIGKILL);
  }
};

TEST(HarnessSelftest, TempDirIsRemovedOnDestruction) {
  std::string path;
  {
    TempDir t("gantry-selftest");
    path = t.path();
    ASSERT_TRUE(fs::is_directory(path));
    fs::create_directories(t.sub("a/b"));
    std::ofstream(t.sub("a/b/file")) << "x";
    TempDir moved = std::move(t);
    EXPECT_EQ(moved.path(), path);
    EXPECT_TRUE(t.path().empty());
  }
  if (const char* keep = std::getenv("GANTRY_KEEP_TEST_DIRS"); keep && std::string(keep) == "1") {
    GTEST_SKIP() << "GANTRY_KEEP_TEST_DIRS=1";
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(HarnessSelftest, RunCapturesOutputExitCodeAndTimesOut) {
  auto r = run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_FALSE(r.timed_out);

  const auto start = std::chrono::steady_clock::now();
  r = run({"sh", "-c", "sleep 30 & sleep 30"}, 300);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));

  r = run({"/nonexistent/program"});
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_NE(r.err.find("cannot execute"), std::string::npos) << r.err;
}

TEST(HarnessSelftest, ProcessSignalWaitAndDestructorKill) {
  TempDir tmp("gantry-selftest");
  pid_t pid;
  {
    Process p({"sleep", "30"}, tmp.sub("sleep.log"));
    pid = p.pid();
    EXPECT_TRUE(p.alive());
    EXPECT_FALSE(p.wait_exit(50).has_value());
    Process moved = std::move(p);
    EXPECT_EQ(moved.pid(), pid);
    EXPECT_FALSE(p.alive());
  }  // destructor: SIGKILL + reap
  EXPECT_FALSE(pid_running(pid));

  Process q({"sleep", "30"}, tmp.sub("sleep.log"));
  EXPECT_TRUE(q.signal(SIGTERM));
  EXPECT_EQ(q.wait_exit(5000), 128 + SIGTERM);
  EXPECT_FALSE(q.alive());

  EXPECT_THROW(Process({"/nonexistent/program"}, tmp.sub("x.log")), std::runtime_error);
}

TEST(HarnessSelftest, HttpGetOnClosedPortIsNullopt) {
  const int port = free_tcp_port();
  EXPECT_GT(port, 0);
  EXPECT_FALSE(http_get(port, "/", 300).has_value());
}

TEST(HarnessSelftest, RestartServiceServesAndSwapsVersions) {
  TempDir tmp("gantry-selftest");
  const std::string root = tmp.sub("root");
  ServiceGuard guard{root};
  const int port = free_tcp_port();
  install_release(root, make_release_tar(tmp, "v1", "healthy"), "v1");

  auto r = run({restart_script(), root, std::to_string(port)}, 15000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(wait_until([&] { return version_is(port, "v1"); }, 5000)) << read_file(root + "/service.log");
  const auto first_pid = pid_in(root);
  ASSERT_TRUE(first_pid && pid_running(*first_pid));

  auto get = http_get(port, "/");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "gantry-demo-service version=v1 behaviour=healthy\n");
  get = http_get(port, "/health");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "ok\n");
  get = http_get(port, "/no-such-page");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 404);

  install_release(root, make_release_tar(tmp, "v2", "healthy"), "v2");
  r = run({restart_script(), root, std::to_string(port)}, 15000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_FALSE(pid_running(*first_pid)) << "the old instance must be stopped";
  ASSERT_TRUE(wait_until([&] { return version_is(port, "v2"); }, 5000)) << read_file(root + "/service.log");
  const auto second_pid = pid_in(root);
  ASSERT_TRUE(second_pid && pid_running(*second_pid));
  EXPECT_NE(*second_pid, *first_pid);

  r = run({stop_script(), root}, 15000);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(pid_running(*second_pid));
  EXPECT_FALSE(fs::exists(root + "/service.pid"));
  EXPECT_FALSE(http_get(port, "/", 300).has_value());

  // Stopping again, and with a stale pidfile, is harmless.
  r = run({stop_script(), root}, 15000);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::ofstream(root + "/service.pid") << *second_pid << "\n";
  r = run({stop_script(), root}, 15000);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(HarnessSelftest, RestartServiceDoesNotHoldCallersPipes) {
  TempDir tmp("gantry-selftest");
  const std::string root = tmp.sub("root");
  ServiceGuard guard{root};
  const int port = free_tcp_port();
  install_release(root, make_release_tar(tmp, "v1", "healthy"), "v1");
  // `cat` only ends when every writer of the pipe has closed it: if the detached service kept
  // the pipe, this would run into the timeout.
  const auto r =
      run({"sh", "-c", "\"$0\" \"$1\" \"$2\" 2>&1 | cat", restart_script(), root, std::to_string(port)}, 10000);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(wait_until([&] { return version_is(port, "v1"); }, 5000));
}

TEST(HarnessSelftest, UnhealthyReleaseFailsHealthCheck) {
  TempDir tmp("gantry-selftest");
  const std::string root = tmp.sub("root");
  ServiceGuard guard{root};
  const int port = free_tcp_port();
  install_release(root, make_release_tar(tmp, "v3", "unhealthy"), "v3");
  const auto r = run({restart_script(), root, std::to_string(port)}, 15000);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(wait_until([&] { return version_is(port, "v3"); }, 5000));
  const auto health = http_get(port, "/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 500);
  EXPECT_EQ(health->body, "unhealthy\n");
}

TEST(HarnessSelftest, CrashReleaseExitsAtStart) {
  TempDir tmp("gantry-selftest");
  const std::string root = tmp.sub("root");
  ServiceGuard guard{root};
  const int port = free_tcp_port();
  install_release(root, make_release_tar(tmp, "v4", "crash"), "v4");
  const auto r = run({restart_script(), root, std::to_string(port)}, 15000);
  ASSERT_EQ(r.exit_code, 0) << r.err;  // it does not wait for health: the agent verifies
  const auto pid = pid_in(root);
  ASSERT_TRUE(pid);
  EXPECT_TRUE(wait_until([&] { return !pid_running(*pid); }, 5000));
  EXPECT_FALSE(http_get(port, "/", 300).has_value());
  EXPECT_NE(read_file(root + "/service.log").find("behaviour=crash"), std::string::npos);

  // And directly: exit status 1.
  Process p({demo_binary(), "--port", std::to_string(port), "--behaviour", "crash"}, tmp.sub("direct.log"));
  EXPECT_EQ(p.wait_exit(5000), 1);
}

TEST(HarnessSelftest, RestartServiceWithoutCurrentFails) {
  TempDir tmp("gantry-selftest");
  const auto r = run({restart_script(), tmp.path(), std::to_string(free_tcp_port())}, 15000);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
}

TEST(HarnessSelftest, DemoServiceStopsOnSigtermAndAfterMaxLifetime) {
  TempDir tmp("gantry-selftest");
  const int port = free_tcp_port();
  Process p({demo_binary(), "--port", std::to_string(port), "--version", "v9"}, tmp.sub("svc.log"));
  ASSERT_TRUE(wait_until([&] { return version_is(port, "v9"); }, 5000)) << read_file(p.log_path());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(p.signal(SIGTERM));
  EXPECT_EQ(p.wait_exit(3000), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));

  Process short_lived({demo_binary(), "--port", std::to_string(free_tcp_port()), "--max-lifetime-s", "1"},
                      tmp.sub("short.log"));
  EXPECT_EQ(short_lived.wait_exit(5000), 0) << read_file(short_lived.log_path());

  Process bad({demo_binary(), "--version", "v1"}, tmp.sub("bad.log"));  // no --port
  EXPECT_EQ(bad.wait_exit(5000), 2);
}

TEST(HarnessSelftest, SlowStartListensOnlyAfterThreeSeconds) {
  TempDir tmp("gantry-selftest");
  const int port = free_tcp_port();
  const auto start = std::chrono::steady_clock::now();
  Process p({demo_binary(), "--port", std::to_string(port), "--version", "v5", "--behaviour", "slow-start"},
            tmp.sub("svc.log"));
  EXPECT_FALSE(wait_until([&] { return version_is(port, "v5"); }, 1500));
  ASSERT_TRUE(wait_until([&] { return version_is(port, "v5"); }, 5000)) << read_file(p.log_path());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2900));
  ASSERT_TRUE(p.signal(SIGTERM));
  EXPECT_EQ(p.wait_exit(3000), 0);
}

TEST(HarnessSelftest, FleetLayoutConfigAndCleanup) {
  std::string dir;
  pid_t service = -1;
  {
    FleetOptions options;
    options.min_healthy_ms = 700;
    Fleet fleet({{"alpha", {{"zone", "a"}, {"rack", "r1"}}}, {"beta", {}}}, options);
    dir = fleet.dir();
    ASSERT_EQ(fleet.size(), 2);
    EXPECT_EQ(fleet.host_id(1), "beta");
    EXPECT_NE(fleet.port(0), fleet.port(1));
    EXPECT_EQ(fleet.root(0), dir + "/agent-1/demo");
    EXPECT_TRUE(fs::is_directory(fleet.root(1)));
    EXPECT_THROW(fleet.write_agent_config(0), std::logic_error);  // coordinator not started
    EXPECT_THROW(fleet.root(2), std::out_of_range);

    // Stand in for an agent: install a release into agent 0's root and start it.
    const std::string tar = fleet.make_release("v1", "healthy");
    EXPECT_EQ(tar, dir + "/releases/v1-healthy.tar");
    install_release(fleet.root(0), tar, "v1");
    const auto r = run({restart_script(), fleet.root(0), std::to_string(fleet.port(0))});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_TRUE(wait_until([&] { return fleet.served_version(0) == "v1"; }, 5000)) << fleet.diagnostics();
    EXPECT_EQ(fleet.served_version(1), std::nullopt);
    const auto pid = fleet.service_pid(0);
    ASSERT_TRUE(pid);
    service = *pid;
  }  // destructor: stops services, removes the dir
  EXPECT_FALSE(pid_running(service));
  if (const char* keep = std::getenv("GANTRY_KEEP_TEST_DIRS"); !keep || std::string(keep) != "1") {
    EXPECT_FALSE(fs::exists(dir));
  }
}

void write_script(const std::string& path, const std::string& body) {
  std::ofstream(path) << "#!/bin/sh\n" << body;
  ::chmod(path.c_str(), 0755);
}

TEST(HarnessSelftest, FleetDrivesStandInDaemons) {
  // Stand-ins for the daemons: the coordinator records its command line and writes
  // endpoints.json as the real one must after binding; the agent records its args and env.
  TempDir fakes("gantry-selftest");
  write_script(fakes.sub("coordinator"),
               "dir=; for a in \"$@\"; do [ \"$prev\" = --state-dir ] && dir=$a; prev=$a; done\n"
               "echo \"$*\" >> \"$dir/args.log\"\n"
               "printf '%s' '{\"agent\": \"tcp://127.0.0.1:5001\", \"pub\": "
               "\"tcp://127.0.0.1:5002\", \"operator\": \"tcp://127.0.0.1:5003\", \"http\": "
               "\"127.0.0.1:5004\"}' > \"$dir/endpoints.json.tmp\"\n"
               "mv \"$dir/endpoints.json.tmp\" \"$dir/endpoints.json\"\n"
               "exec sleep 30\n");
  write_script(fakes.sub("agent"), "echo \"args=$* FOO=$FOO\"\nexec sleep 30\n");
  write_script(fakes.sub("dies"), "echo 'cannot bind: boom' >&2\nexit 3\n");

  FleetOptions options;
  options.insecure = true;  // the stand-ins speak no CURVE; the secure config is checked in security_test
  options.coordinator_binary = fakes.sub("coordinator");
  options.agent_binary = fakes.sub("agent");
  options.healthy_deadline_ms = 4000;
  Fleet fleet({{"host-1", {{"zone", "a"}, {"rack", "r1"}}}, {"host-2", {}}}, options);

  EXPECT_THROW(fleet.endpoints(), std::logic_error);
  fleet.start_coordinator();
  EXPECT_EQ(fleet.endpoints().agent, "tcp://127.0.0.1:5001");
  EXPECT_EQ(fleet.endpoints().pub, "tcp://127.0.0.1:5002");
  EXPECT_EQ(fleet.endpoints().operator_, "tcp://127.0.0.1:5003");
  EXPECT_EQ(fleet.endpoints().http, "127.0.0.1:5004");
  EXPECT_TRUE(fleet.coordinator_running());

  fleet.restart_coordinator();  // must pass the concrete endpoints back
  std::string args = read_file(fleet.state_dir() + "/args.log");
  const auto second = args.substr(args.find('\n') + 1);
  // The first start: ports the fleet chose, none of them an agent's demo-service port (a
  // coordinator bound to "any port" could be given one of those before its service binds it).
  const auto first_start = args.substr(0, args.find('\n'));
  std::set<int> coordinator_ports;
  const std::regex port_re(
      R"(--(agent-endpoint|pub-endpoint|operator-endpoint) tcp://127\.0\.0\.1:(\d+) |--http-address 127\.0\.0\.1:(\d+) )");
  for (auto it = std::sregex_iterator(first_start.begin(), first_start.end(), port_re); it != std::sregex_iterator();
       ++it)
    coordinator_ports.insert(std::stoi((*it)[2].matched ? (*it)[2].str() : (*it)[3].str()));
  EXPECT_EQ(coordinator_ports.size(), 4u) << first_start;
  EXPECT_EQ(coordinator_ports.count(0), 0u) << first_start;
  EXPECT_EQ(coordinator_ports.count(fleet.port(0)) + coordinator_ports.count(fleet.port(1)), 0u) << first_start;
  EXPECT_NE(second.find("--agent-endpoint tcp://127.0.0.1:5001 --pub-endpoint "
                        "tcp://127.0.0.1:5002 --operator-endpoint tcp://127.0.0.1:5003 "
                        "--http-address 127.0.0.1:5004 "),
            std::string::npos)
      << args;
  EXPECT_NE(second.find("--state-dir " + fleet.state_dir() + " "), std::string::npos) << args;
  EXPECT_EQ(fleet.kill_coordinator(SIGTERM), 128 + SIGTERM);
  EXPECT_FALSE(fleet.coordinator_running());

  fleet.start_agent(0, {{"FOO", "bar"}});
  fleet.start_agent(1);
  EXPECT_EQ(read_file(fleet.agent_config_path(0)),
            "host_id = host-1\n"
            "coordinator = tcp://127.0.0.1:5001\n"
            "coordinator_pub = tcp://127.0.0.1:5002\n"
            "state_dir = " +
                fleet.dir() +
                "/agent-1/state\n"
                "insecure_dev = true\n"
                "heartbeat_interval_ms = 200\n"
                "label = rack=r1\n"
                "label = zone=a\n"
                "\n"
                "[service.demo]\n"
                "driver = binary\n"
                "root = " +
                fleet.dir() +
                "/agent-1/demo\n"
                "restart_command = " +
                source_dir() + "/demo/restart-service " + fleet.dir() + "/agent-1/demo " +
                std::to_string(fleet.port(0)) +
                "\n"
                "http_probe = http://127.0.0.1:" +
                std::to_string(fleet.port(0)) +
                "/health\n"
                "min_healthy_ms = 500\n"
                "healthy_deadline_ms = 4000\n"
                "probe_interval_ms = 100\n");
  EXPECT_EQ(read_file(fleet.agent_config_path(1)).find("label"), std::string::npos);
  EXPECT_TRUE(fleet.agent_running(0));
  EXPECT_THROW(fleet.start_agent(0), std::logic_error);
  ASSERT_TRUE(wait_until([&] { return fleet.agent_log(0).find("FOO=bar") != std::string::npos; }, 5000));
  const pid_t first = fleet.agent_pid(0);
  fleet.restart_agent(0);  // keeps its environment
  EXPECT_NE(fleet.agent_pid(0), first);
  EXPECT_FALSE(pid_running(first));
  ASSERT_TRUE(wait_until(
      [&] {
        const auto log = fleet.agent_log(0);
        return log.find("FOO=bar") != log.rfind("FOO=bar");  // twice
      },
      5000))
      << fleet.agent_log(0);
  EXPECT_NE(fleet.agent_log(0).find("args=--config " + fleet.agent_config_path(0)), std::string::npos);
  EXPECT_EQ(fleet.kill_agent(1, SIGKILL), 128 + SIGKILL);
  EXPECT_FALSE(fleet.agent_running(1));
  EXPECT_NE(fleet.diagnostics().find("host-2 agent.log"), std::string::npos);

  // A coordinator that dies at start is reported with its log, not waited on for 10 s.
  FleetOptions dying;
  dying.coordinator_binary = fakes.sub("dies");
  Fleet broken(1, dying);
  const auto start = std::chrono::steady_clock::now();
  try {
    broken.start_coordinator();
    ADD_FAILURE() << "start_coordinator should have thrown";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot bind: boom"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace gantry::testing
