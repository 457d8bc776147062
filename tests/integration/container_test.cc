// The container driver end to end with a real runtime (podman by default): a real coordinator
// and real agents roll image archives of the demo service, built locally without a registry
// (scripts/make-demo-image), and the test checks each container's own HTTP answer.
//
// Runtime flags come from the environment, with defaults for the restricted CI host
// (runc, cgroups v1, no permission to raise rlimits); a normal host needs none of them:
//   GANTRY_TEST_RUNTIME        podman
//   GANTRY_TEST_RUNTIME_ARGS   --runtime runc
//   GANTRY_TEST_RUN_ARGS       --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
// Every container and image a test creates carries a per-test token and is removed at the end,
// also when the test fails.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/fleet.h"

using gantry::testing::CmdResult;
using gantry::testing::Fleet;
using gantry::testing::FleetOptions;
using gantry::testing::json_of;
using gantry::testing::run;
using gantry::testing::wait_until;

namespace {

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : def;
}

std::string runtime() { return env_or("GANTRY_TEST_RUNTIME", "podman"); }
std::string runtime_args() { return env_or("GANTRY_TEST_RUNTIME_ARGS", "--runtime runc"); }
std::string run_args() {
  return env_or("GANTRY_TEST_RUN_ARGS", "--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024");
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// `runtime runtime_args args...`
CmdResult rt(const std::vector<std::string>& args, int timeout_ms = 60000) {
  std::vector<std::string> argv = {runtime()};
  for (auto& w : words(runtime_args())) argv.push_back(w);
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout_ms);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

int online_hosts(Fleet& f) {
  auto j = json_of(f.cli({"--json", "hosts"}, 10000));
  int n = 0;
  if (j.contains("hosts"))
    for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
  return n;
}

nlohmann::json last_rollout(Fleet& f) {
  auto st = json_of(f.cli({"--json", "status", "--service", "demo"}, 10000));
  if (!st.contains("rollouts") || st["rollouts"].empty()) return {};
  return st["rollouts"][0];
}

// Removes, in its destructor, every container labelled with the token and every image made or
// tagged for it. Declared before the Fleet so it runs after the agents are dead.
class RuntimeJanitor {
 public:
  explicit RuntimeJanitor(std::string token) : token_(std::move(token)) {}
  ~RuntimeJanitor() {
    auto ps = rt({"ps", "-a", "-q", "--filter", "label=gantry-test=" + token_});
    for (const auto& id : words(ps.out)) rt({"rm", "-f", id});
    for (const auto& ref : {"localhost/gantry/" + token_ + "-*", "localhost/gantry-test-" + token_ + "*"}) {
      auto im = rt({"images", "-q", "--filter", "reference=" + ref});
      for (const auto& id : words(im.out)) image_ids.push_back(id);
    }
    for (const auto& id : image_ids) rt({"rmi", "-f", id});
  }
  std::vector<std::string> image_ids;

 private:
  std::string token_;
};

std::string new_token() {
  static std::atomic<int> n{0};
  return "gct" + std::to_string(::getpid()) + "x" + std::to_string(n++);
}

struct ContainerFleet {
  std::string token = new_token();
  RuntimeJanitor janitor{token};
  std::unique_ptr<Fleet> fleet;

  explicit ContainerFleet(int n, const std::string& extra_service_lines = "") {
    FleetOptions o;
    o.min_healthy_ms = 500;
    o.healthy_deadline_ms = 8000;
    std::string tok = token;
    o.service_section = [tok, o, extra_service_lines](int i, int port, const std::string& root) {
      std::ostringstream s;
      s << "driver = container\n"
        << "root = " << root << "\n"
        << "runtime = " << runtime() << "\n"
        << "runtime_args = " << runtime_args() << "\n"
        << "container_name = " << tok << "-h" << (i + 1) << "\n"
        << "run_args = " << run_args() << "\n"
        << "run_args = --label gantry-test=" << tok << "\n"
        << "command = --port " << port << "\n"
        << "stop_timeout_ms = 2000\n"
        << "http_probe = http://127.0.0.1:" << port << "/health\n"
        << "min_healthy_ms = " << o.min_healthy_ms << "\n"
        << "healthy_deadline_ms = " << o.healthy_deadline_ms << "\n"
        << "probe_interval_ms = " << o.probe_interval_ms << "\n"
        << extra_service_lines;
      return s.str();
    };
    fleet = std::make_unique<Fleet>(n, o);
  }
  ~ContainerFleet() { fleet.reset(); }  // agents die before the janitor removes containers

  Fleet& f() { return *fleet; }
  std::string container(int i) const { return token + "-h" + std::to_string(i + 1); }

  // Signs an artifact with the fleet's release key, as a release manager would (secure fleets):
  // image archives and image-ref files are releases like any other.
  std::string signed_release(const std::string& path, const std::string& version) {
    if (!f().secure()) return path;
    auto s = run({gantry::testing::bin_dir() + "/cli/gantry", "release", "sign", "--key",
                  f().keys_dir() + "/release.key", path, "--service", "demo", "--version", version},
                 30000);
    if (s.exit_code != 0) throw std::runtime_error("gantry release sign failed: " + s.err + s.out);
    return path;
  }

  // An image archive of the demo service (signed); its image id is remembered for cleanup.
  std::string image(const std::string& version, const std::string& behaviour) {
    std::string out = f().dir() + "/images/" + version + "-" + behaviour + ".tar";
    auto r = run({gantry::testing::source_dir() + "/scripts/make-demo-image", "--version", version, "--behaviour",
                  behaviour, "--out", out, "--tag", "localhost/gantry-test-" + token + ":" + version, "--binary",
                  gantry::testing::bin_dir() + "/demo/gantry-demo-service-static"},
                 120000, {{"GANTRY_RUNTIME", runtime()}, {"GANTRY_RUNTIME_ARGS", runtime_args()}});
    if (r.exit_code != 0) throw std::runtime_error("make-demo-image failed: " + r.out + r.err);
    auto m = run({"tar", "-xOf", out, "manifest.json"});
    auto j = nlohmann::json::parse(m.out);
    std::string cfg = j[0]["Config"].get<std::string>();
    janitor.image_ids.push_back(cfg.substr(0, 64));
    return signed_release(out, version);
  }

  void start() {
    f().start_coordinator();
    f().start_all_agents();
    ASSERT_TRUE(wait_until([&] { return online_hosts(f()) == f().size(); }, 20000)) << f().diagnostics();
  }

  // What the runtime says about the container: "running <version label>" or "" when absent.
  std::string container_state(int i) {
    auto r = rt({"container", "inspect", "--format", "{{.State.Status}} {{index .Config.Labels \"gantry.version\"}}",
                 container(i)});
    return r.exit_code == 0 ? trim(r.out) : "";
  }
};

bool have_runtime() { return run({runtime(), "--version"}, 20000).exit_code == 0; }

}  // namespace

TEST(Containers, RollV1ToV2ThenFailingV3IsRevertedAndRuntimeErrorsKeepTheOldContainer) {
  if (!have_runtime()) GTEST_SKIP() << runtime() << " is not installed (scripts/install-deps installs podman)";
  ContainerFleet cf(3);
  Fleet& f = cf.f();
  cf.start();
  auto v1 = cf.image("v1", "healthy");
  auto v2 = cf.image("v2", "healthy");
  auto v3 = cf.image("v3", "unhealthy");

  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v1", "--release", v1, "--batches", "100%", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v1") << "host " << i;

  // v1 -> v2 in two batches.
  r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v2", "--release", v2, "--batches", "1,2", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) {
    EXPECT_EQ(f.served_version(i), "v2") << "host " << i;
    EXPECT_EQ(cf.container_state(i), "running v2") << "host " << i;
    // The previous image is kept for an instant revert.
    auto prev = nlohmann::json::parse(gantry::testing::read_file(f.root(i) + "/releases/v1/image.json"));
    EXPECT_EQ(rt({"image", "inspect", prev["image_id"].get<std::string>()}).exit_code, 0);
  }
  auto hosts = json_of(f.cli({"--json", "hosts"}));
  for (const auto& h : hosts["hosts"]) {
    EXPECT_EQ(h["services"][0].value("current_version", ""), "v2");
    EXPECT_EQ(h["services"][0].value("previous_version", ""), "v1");
  }

  // v3 fails its health check on the first host: reverted there, the others never ordered.
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "v3", "--release", v3, "--batches", "1,2",
             "--max-failures", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) {
    EXPECT_EQ(f.served_version(i), "v2") << "host " << i << f.diagnostics();
    EXPECT_EQ(cf.container_state(i), "running v2") << "host " << i;
  }
  auto ro = last_rollout(f);
  bool reverted = false;
  for (const auto& h : ro["hosts"]) {
    if (h.value("state", "") == "failed") {
      reverted = true;
      EXPECT_NE(h.value("message", "").find("verif"), std::string::npos) << h.dump();
      EXPECT_NE(h.value("message", "").find("reverted to v2"), std::string::npos) << h.dump();
    }
  }
  EXPECT_TRUE(reverted) << ro.dump(2);

  // An image reference that nobody can pull: the runtime's own message comes back and the
  // container keeps running v2.
  std::string missing = f.dir() + "/images/missing.json";
  {
    std::ofstream out(missing);
    out << R"({"gantry_image_ref": 1, "image": "localhost/gantry-test-)" << cf.token
        << R"(-missing@sha256:0000000000000000000000000000000000000000000000000000000000000000"})"
        << "\n";
  }
  cf.signed_release(missing, "v4");
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "v4", "--release", missing, "--batches", "1",
             "--max-failures", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  ro = last_rollout(f);
  bool runtime_msg = false;
  for (const auto& h : ro["hosts"]) {
    std::string msg = h.value("message", "");
    if (h.value("state", "") == "failed")
      runtime_msg = msg.find("pulling") != std::string::npos && msg.find("Error") != std::string::npos;
  }
  EXPECT_TRUE(runtime_msg) << ro.dump(2);
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(cf.container_state(i), "running v2") << "host " << i;

  // An image reference pinned by digest that the runtime already has (v1's): no pull needed,
  // the digest is checked, and every host runs v1's image again.
  auto digests = rt({"image", "inspect", "--format", "{{range .RepoDigests}}{{.}} {{end}}", cf.janitor.image_ids[0]});
  ASSERT_EQ(digests.exit_code, 0) << digests.err;
  auto rd = words(digests.out);
  ASSERT_FALSE(rd.empty()) << digests.out;
  std::string pinned = f.dir() + "/images/v1-ref.json";
  {
    std::ofstream out(pinned);
    out << nlohmann::json{{"gantry_image_ref", 1}, {"image", rd[0]}}.dump() << "\n";
  }
  cf.signed_release(pinned, "v1r");
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "v1r", "--release", pinned, "--batches", "100%",
             "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) {
    EXPECT_EQ(f.served_version(i), "v1") << "host " << i;
    EXPECT_EQ(cf.container_state(i), "running v1r") << "host " << i;
  }
}

TEST(Containers, AgentKilledBetweenStoppingTheOldAndStartingTheNewContainerRecovers) {
  if (!have_runtime()) GTEST_SKIP() << runtime() << " is not installed (scripts/install-deps installs podman)";
  ContainerFleet cf(2);
  Fleet& f = cf.f();
  cf.start();
  auto v1 = cf.image("v1", "healthy");
  auto v2 = cf.image("v2", "healthy");
  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v1", "--release", v1, "--batches", "100%", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();

  // host-1's agent dies right after removing the v1 container, before running v2.
  f.kill_agent(0);
  f.start_agent(0, {{"GANTRY_AGENT_CRASH_AT", "container_stopped"}});
  ASSERT_TRUE(wait_until([&] { return online_hosts(f) == 2; }, 20000)) << f.diagnostics();
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", v2, "--batches", "100%",
             "--unknown-hosts", "wait", "--unknown-wait", "120s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(wait_until([&] { return !f.agent_running(0); }, 60000)) << f.diagnostics();
  EXPECT_EQ(cf.container_state(0), "") << "the crash point is between stop and run";

  // Restarted without the fault, the agent finishes the swap from its journal.
  f.start_agent(0);
  auto w = f.cli({"rollout", "watch", "--service", "demo"});
  EXPECT_EQ(w.exit_code, 0) << w.out << w.err << f.diagnostics();
  EXPECT_EQ(last_rollout(f).value("phase", ""), "succeeded") << last_rollout(f).dump(2);
  for (int i = 0; i < f.size(); ++i) {
    EXPECT_EQ(f.served_version(i), "v2") << "host " << i << f.diagnostics();
    EXPECT_EQ(cf.container_state(i), "running v2") << "host " << i;
  }
  EXPECT_NE(f.agent_log(0).find("resuming order"), std::string::npos) << f.agent_log(0);
}
