// Promise 5 (level-triggered) over a real network: the coordinator and 6 agents each in their
// own network namespace (veth pairs to a bridge, 198.18.0.0/15). One host is partitioned mid-
// rollout by taking its link down: it becomes unknown after the heartbeat timeout and counts as
// the plan says (unknown_hosts wait: the rollout waits for it); once the link is back it is
// reconciled to the target release without any operator action. A host partitioned through a
// whole rollout converges to the desired release (a rollout of its own) when it comes back.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/fleet.h"
#include "tests/support/netns.h"

using namespace gantry::testing;

namespace {

constexpr int kAgents = 6;
constexpr int kServicePort = 8080;  // the same in every namespace: each has its own loopback
constexpr int kHeartbeatMs = 200;
constexpr int kMisses = 3;

// The coordinator in namespace 0, agent k (host-k) in namespace k; everything under one dir.
class NetFleet {
 public:
  explicit NetFleet(NetnsLab& lab) : lab_(lab), dir_("gantry-netns") {
    coord_ = lab_.address(0);
    std::filesystem::create_directories(dir_.sub("coordinator"));
    std::filesystem::create_directories(dir_.sub("releases"));
  }
  ~NetFleet() {
    for (auto& a : agents_) a.kill_and_reap();
    coordinator_.kill_and_reap();
    for (int k = 1; k <= kAgents; ++k) {
      run(lab_.wrap(k, {source_dir() + "/demo/stop-service", root(k)}), 15000);
    }
    // Whatever else is left inside the namespaces goes with them (NetnsLab's destructor).
  }

  std::string root(int k) const { return dir_.sub("agent-" + std::to_string(k) + "/demo"); }
  std::string agent_log(int k) const { return read_file(dir_.sub("agent-" + std::to_string(k) + "/agent.log")); }

  void start_coordinator() {
    coordinator_ = Process(
        lab_.wrap(0, {bin_dir() + "/coordinator/gantry-coordinator", "--state-dir", dir_.sub("coordinator"),
                      "--agent-endpoint", "tcp://" + coord_ + ":7600", "--pub-endpoint", "tcp://" + coord_ + ":7601",
                      "--operator-endpoint", "tcp://127.0.0.1:7602", "--http-address", "", "--heartbeat-interval-ms",
                      std::to_string(kHeartbeatMs), "--heartbeat-misses", std::to_string(kMisses), "--insecure-dev"}),
        dir_.sub("coordinator.log"));
    if (!wait_until([&] { return !read_file(dir_.sub("coordinator/endpoints.json")).empty() || !coordinator_.alive(); },
                    15000) ||
        !coordinator_.alive()) {
      throw std::runtime_error("coordinator did not start:\n" + read_file(dir_.sub("coordinator.log")));
    }
  }

  void start_agent(int k) {
    const std::string d = dir_.sub("agent-" + std::to_string(k));
    std::filesystem::create_directories(d + "/state");
    std::filesystem::create_directories(root(k));
    std::ofstream c(d + "/agent.conf", std::ios::trunc);
    c << "host_id = host-" << k << "\n"
      << "coordinator = tcp://" << coord_ << ":7600\n"
      << "coordinator_pub = tcp://" << coord_ << ":7601\n"
      << "state_dir = " << d << "/state\n"
      << "insecure_dev = true\n"
      << "heartbeat_interval_ms = " << kHeartbeatMs << "\n"
      << "\n[service.demo]\n"
      << "driver = binary\n"
      << "root = " << root(k) << "\n"
      << "restart_command = " << source_dir() << "/demo/restart-service " << root(k) << " " << kServicePort << "\n"
      << "http_probe = http://127.0.0.1:" << kServicePort << "/health\n"
      << "min_healthy_ms = 300\nhealthy_deadline_ms = 4000\nprobe_interval_ms = 100\n";
    c.close();
    agents_.push_back(
        Process(lab_.wrap(k, {bin_dir() + "/agent/gantry-agent", "--config", d + "/agent.conf"}), d + "/agent.log"));
  }

  CmdResult cli(const std::vector<std::string>& args, int timeout_ms = 20000) {
    std::vector<std::string> argv = {bin_dir() + "/cli/gantry", "--coordinator", "tcp://127.0.0.1:7602"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(lab_.wrap(0, argv), timeout_ms);
  }

  std::string make_release(const std::string& version) {
    const std::string out = dir_.sub("releases/" + version + ".tar");
    const auto r = run({source_dir() + "/scripts/make-demo-release", "--version", version, "--behaviour", "healthy",
                        "--out", out, "--binary", bin_dir() + "/demo/gantry-demo-service"},
                       60000);
    if (r.exit_code != 0) throw std::runtime_error("make-demo-release: " + r.err);
    return out;
  }

  std::optional<std::string> served_version(int k) {
    const auto r = lab_.http_get(k, kServicePort, "/");
    if (!r || r->status != 200) return std::nullopt;
    const auto at = r->body.find("version=");
    if (at == std::string::npos) return std::nullopt;
    const auto end = r->body.find_first_of(" \t\r\n", at + 8);
    return r->body.substr(at + 8, end == std::string::npos ? std::string::npos : end - at - 8);
  }

  nlohmann::json hosts() { return json_of(cli({"--json", "hosts"})); }
  nlohmann::json rollout(uint64_t id) { return json_of(cli({"--json", "rollout", "show", std::to_string(id)})); }

  std::string host_field(const std::string& host, const char* field) {
    auto j = hosts();
    if (!j.contains("hosts")) return "";
    for (const auto& h : j["hosts"]) {
      if (h.value("host_id", "") == host) return h.value(field, "");
    }
    return "";
  }

  std::string diagnostics() {
    std::string d = "\n--- coordinator.log ---\n" + tail(read_file(dir_.sub("coordinator.log")));
    for (int k = 1; k <= kAgents; ++k) d += "\n--- host-" + std::to_string(k) + " agent.log ---\n" + tail(agent_log(k));
    return d;
  }

 private:
  static std::string tail(const std::string& s) { return s.size() > 3000 ? s.substr(s.size() - 3000) : s; }

  NetnsLab& lab_;
  TempDir dir_;
  std::string coord_;
  Process coordinator_;
  std::vector<Process> agents_;
};

// The coordinator and every agent started and online, then v1 installed everywhere.
void start_on_v1(NetFleet& f) {
  f.start_coordinator();
  for (int k = 1; k <= kAgents; ++k) f.start_agent(k);
  auto online = [&] {
    int n = 0;
    auto j = f.hosts();
    if (j.contains("hosts"))
      for (const auto& h : j["hosts"]) n += h.value("online", false);
    return n;
  };
  ASSERT_TRUE(wait_until([&] { return online() == kAgents; }, 30000, 200)) << f.diagnostics();
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v1", "--release", f.make_release("v1"),
                  "--batches", "100%", "--min-healthy-time", "200", "--wait"},
                 120000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
}

TEST(NetnsPartition, PartitionedHostIsUnknownThenReconciledWhenTheLinkComesBack) {
  const std::string why = netns_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "network namespace test skipped: " << why;

  NetnsLab lab(kAgents + 1);
  NetFleet f(lab);
  ASSERT_NO_FATAL_FAILURE(start_on_v1(f));

  // v2 in batches of 2 (host-1,2 | host-3,4 | host-5,6); unknown hosts wait (long enough that
  // the rollout must wait for the partitioned host), no failure allowed.
  auto r = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release",
                  f.make_release("v2"), "--batches", "2", "--max-failures", "0", "--unknown-hosts", "wait",
                  "--unknown-wait", "10m", "--min-healthy-time", "300"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const uint64_t id = json_of(r).value("id", 0ULL);

  // Partition host-3 (namespace 3) while batch 1 is in progress.
  lab.link_down(3);
  ASSERT_TRUE(wait_until([&] { return f.host_field("host-3", "state") == "unknown"; }, 20000, 100))
      << f.hosts().dump(2) << f.diagnostics();

  // Batch 2 orders host-3 anyway; it stays unknown, does not count yet (wait), and the rollout
  // waits for it instead of going on or failing.
  nlohmann::json ro;
  ASSERT_TRUE(wait_until(
      [&] {
        ro = f.rollout(id);
        return host_state(ro, "host-4") == "healthy" && host_state(ro, "host-3") == "unknown";
      },
      60000, 200))
      << ro.dump(2) << f.diagnostics();
  ro = f.rollout(id);
  EXPECT_EQ(ro.value("phase", ""), "running") << ro.dump(2);
  EXPECT_EQ(ro["counts"].value("failed", -1), 0) << ro.dump(2);
  EXPECT_EQ(host_state(ro, "host-5"), "pending") << "batch 3 must wait for the unknown host\n" << ro.dump(2);
  EXPECT_EQ(f.served_version(3), "v1") << "host-3 was cut off before its order arrived";

  // Heal: no operator action; the host says hello, is ordered again and catches up.
  lab.link_up(3);
  ro = nlohmann::json();
  ASSERT_TRUE(wait_until(
      [&] {
        ro = f.rollout(id);
        return is_terminal_phase(ro.value("phase", ""));
      },
      90000, 200))
      << ro.dump(2) << f.diagnostics();
  EXPECT_EQ(ro.value("phase", ""), "succeeded") << ro.dump(2) << f.diagnostics();
  EXPECT_EQ(ro["counts"].value("healthy", 0), kAgents) << ro.dump(2);
  EXPECT_NE(events_text(ro).find("host-3 is back"), std::string::npos) << events_text(ro);

  auto hosts = f.hosts();
  for (int k = 1; k <= kAgents; ++k) {
    const std::string h = "host-" + std::to_string(k);
    EXPECT_EQ(f.served_version(k), "v2") << h << f.diagnostics();
    EXPECT_EQ(recorded_version(hosts, h), "v2") << h << "\n" << hosts.dump(2);
  }
}

// The desired state (GUARANTEES 5): host-3 is cut off before the rollout starts and stays cut
// off until the rollout has ended (succeeded, host-3 unknown within the budget). When its link
// comes back it is drift, and the coordinator converges it to v2 with a rollout of its own,
// with no operator action.
TEST(NetnsPartition, HostPartitionedThroughAWholeRolloutConvergesWhenItComesBack) {
  const std::string why = netns_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "network namespace test skipped: " << why;

  NetnsLab lab(kAgents + 1);
  NetFleet f(lab);
  ASSERT_NO_FATAL_FAILURE(start_on_v1(f));

  lab.link_down(3);
  ASSERT_TRUE(wait_until([&] { return f.host_field("host-3", "state") == "unknown"; }, 20000, 100))
      << f.hosts().dump(2) << f.diagnostics();

  // The whole rollout runs without host-3: unknown counts as failed, within a budget of 1.
  auto r =
      f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release", f.make_release("v2"),
             "--batches", "100%", "--max-failures", "1", "--unknown-hosts", "fail", "--min-healthy-time", "300"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const uint64_t id = json_of(r).value("id", 0ULL);
  nlohmann::json ro;
  ASSERT_TRUE(wait_until(
      [&] {
        ro = f.rollout(id);
        return is_terminal_phase(ro.value("phase", ""));
      },
      90000, 200))
      << ro.dump(2) << f.diagnostics();
  ASSERT_EQ(ro.value("phase", ""), "succeeded") << ro.dump(2);
  EXPECT_EQ(host_state(ro, "host-3"), "unknown") << ro.dump(2);
  EXPECT_EQ(f.served_version(3), "v1");

  // The desired state is v2 on every host with the service.
  auto st = json_of(f.cli({"--json", "status"}));
  ASSERT_TRUE(st.contains("desired")) << st.dump(2);
  ASSERT_EQ(st["desired"].size(), 1u) << st.dump(2);
  EXPECT_EQ(st["desired"][0].value("version", ""), "v2") << st.dump(2);
  EXPECT_EQ(st["desired"][0].value("converge", ""), "auto") << st.dump(2);

  // Heal, and nothing else: host-3 says hello, is drift, and is converged.
  const auto healed = std::chrono::steady_clock::now();
  lab.link_up(3);
  ASSERT_TRUE(wait_until([&] { return f.host_field("host-3", "state") == "online"; }, 30000, 50)) << f.diagnostics();
  const auto back = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return f.served_version(3) == std::optional<std::string>("v2"); }, 60000, 100))
      << f.hosts().dump(2) << f.diagnostics();
  const auto converged = std::chrono::steady_clock::now();
  const auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::cout << "host-3 online " << ms(back - healed) << " ms after its link came back; serving v2 "
            << ms(converged - back) << " ms after that (heartbeat timeout " << kHeartbeatMs * kMisses << " ms)\n";

  // The repair is a rollout of its own in the history, kind converge, started by the coordinator.
  nlohmann::json list;
  ASSERT_TRUE(wait_until(
      [&] {
        list = json_of(f.cli({"--json", "history", "demo"}));
        if (!list.contains("rollouts")) return false;
        for (const auto& x : list["rollouts"])
          if (x.value("kind", "") == "converge" && x.value("phase", "") == "succeeded") return true;
        return false;
      },
      30000, 200))
      << list.dump(2) << f.diagnostics();
  for (const auto& x : list["rollouts"]) {
    if (x.value("kind", "") != "converge") continue;
    EXPECT_EQ(x.value("created_by", ""), "gantry (converge)") << x.dump(2);
    EXPECT_NE(x.value("reason", "").find("host-3 runs v1"), std::string::npos) << x.dump(2);
  }
  auto hosts = f.hosts();
  for (const auto& h : hosts["hosts"]) EXPECT_FALSE(h.value("drift", true)) << h.dump(2);
  EXPECT_EQ(recorded_version(hosts, "host-3"), "v2") << hosts.dump(2);
}

}  // namespace
