// Issue 23: the leader cut off from etcd but not from the agents. Three etcd members, three
// coordinators, five agents and the operator's CLI each in a network namespace of their own
// (veth to a bridge, 198.18.0.0/15, tests/support/netns.h). Mid-rollout, an iptables rule in the
// leader's namespace drops its traffic to etcd's client ports, and nothing else: the agents still
// reach it. The leader must stop ordering within its lease TTL (it exits with 75, as its lease
// may have expired), a standby takes over and carries the rollout to the end it would have had
// (every host on the new release), no order runs twice on a host, and no host acts on an order
// over a connection to a coordinator whose epoch is older than one it has already seen.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/fleet.h"
#include "tests/support/ha_checks.h"
#include "tests/support/netns.h"

using namespace gantry::testing;

namespace {

constexpr int kEtcd = 3;
constexpr int kCoordinators = 3;
constexpr int kAgents = 5;
// Namespaces: etcd members 0..2, coordinators 3..5, agents 6..10, the operator 11.
constexpr int kCoordinatorNs = kEtcd;
constexpr int kAgentNs = kEtcd + kCoordinators;
constexpr int kOperatorNs = kAgentNs + kAgents;
constexpr int kNamespaces = kOperatorNs + 1;
// Each namespace has its own ports: the same numbers everywhere.
constexpr int kAgentPort = 7600, kPubPort = 7601, kOperatorPort = 7602, kHttpPort = 7680, kServicePort = 8080;
constexpr int kHeartbeatMs = 200;
constexpr int kMisses = 10;
constexpr int kLeaseTtlS = 3;
// With heartbeat datagrams an agent hears from its coordinator every this often, and leaves a
// silent one (paused, or cut off without its connection dropping) after kMisses of these (the
// default, 10 s, would make that 100 s).
constexpr int kCoordinatorHeartbeatMs = 1000;

using Clock = std::chrono::steady_clock;

std::string tail(const std::string& s, size_t n = 4000) { return s.size() > n ? "..." + s.substr(s.size() - n) : s; }

// Coordinators, agents and the CLI in the lab's namespaces, on an etcd cluster in others.
class HaNet {
 public:
  HaNet(NetnsLab& lab, const EtcdCluster& etcd) : lab_(lab), etcd_(etcd), dir_("gantry-ha-netns") {
    for (int k = 0; k < kCoordinators; ++k) std::filesystem::create_directories(coordinator_dir(k));
    std::filesystem::create_directories(dir_.sub("releases"));
    coordinators_.resize(kCoordinators);
    agents_.resize(kAgents);
  }
  ~HaNet() {
    for (auto& a : agents_) a.kill_and_reap();
    for (auto& c : coordinators_) c.kill_and_reap();
    for (int i = 0; i < kAgents; ++i)
      run(lab_.wrap(kAgentNs + i, {source_dir() + "/demo/stop-service", root(i)}), 15000);
    // Whatever else is left inside the namespaces goes with them (NetnsLab's destructor).
  }

  std::string caddr(int k) const { return lab_.address(kCoordinatorNs + k); }
  std::string coordinator_dir(int k) const { return dir_.sub("coordinator-" + std::to_string(k + 1)); }
  std::string coordinator_log(int k) const { return read_file(coordinator_dir(k) + ".log"); }
  std::string root(int i) const { return dir_.sub("agent-" + std::to_string(i + 1) + "/demo"); }
  std::string host_id(int i) const { return "host-" + std::to_string(i + 1); }
  std::string agent_log(int i) const { return read_file(dir_.sub("agent-" + std::to_string(i + 1) + "/agent.log")); }

  std::string list(int port) const {
    std::string out;
    for (int k = 0; k < kCoordinators; ++k)
      out += (k ? "," : "") + std::string("tcp://") + caddr(k) + ":" + std::to_string(port);
    return out;
  }

  void start_coordinator(int k) {
    const std::string a = caddr(k);
    coordinators_[static_cast<size_t>(k)] =
        Process(lab_.wrap(kCoordinatorNs + k, {bin_dir() + "/coordinator/gantry-coordinator",
                                               "--state-dir",
                                               coordinator_dir(k),
                                               "--agent-endpoint",
                                               "tcp://" + a + ":" + std::to_string(kAgentPort),
                                               "--pub-endpoint",
                                               "tcp://" + a + ":" + std::to_string(kPubPort),
                                               "--operator-endpoint",
                                               "tcp://" + a + ":" + std::to_string(kOperatorPort),
                                               "--http-address",
                                               "0.0.0.0:" + std::to_string(kHttpPort),
                                               "--advertise-host",
                                               a,
                                               "--heartbeat-interval-ms",
                                               std::to_string(kHeartbeatMs),
                                               "--heartbeat-misses",
                                               std::to_string(kMisses),
                                               "--restart-grace-ms",
                                               "10000",
                                               "--insecure-dev",
                                               "--name",
                                               "c" + std::to_string(k + 1),
                                               "--store",
                                               etcd_.uri(),
                                               "--lease-ttl",
                                               std::to_string(kLeaseTtlS),
                                               "--coordinator-heartbeat-ms",
                                               std::to_string(kCoordinatorHeartbeatMs)}),
                coordinator_dir(k) + ".log");
  }
  Process& coordinator(int k) { return coordinators_.at(static_cast<size_t>(k)); }

  nlohmann::json status(int k) const {
    const auto r = lab_.http_get(kCoordinatorNs + k, kHttpPort, "/status", 2000);
    if (!r || r->status != 200) return nlohmann::json();
    try {
      return nlohmann::json::parse(r->body);
    } catch (const std::exception&) {
      return nlohmann::json();
    }
  }
  // The coordinator whose /status says it leads (polled, bounded); -1 if none.
  int leader(int timeout_ms, int other_than = -1) {
    int found = -1;
    wait_until(
        [&] {
          for (int k = 0; k < kCoordinators; ++k) {
            if (k == other_than || !coordinator(k).alive()) continue;
            if (text_of(status(k), "role") == "leader") {
              found = k;
              return true;
            }
          }
          return false;
        },
        timeout_ms, 50);
    return found;
  }

  void start_agent(int i) {
    const std::string d = dir_.sub("agent-" + std::to_string(i + 1));
    std::filesystem::create_directories(d + "/state");
    std::filesystem::create_directories(root(i));
    std::ofstream c(d + "/agent.conf", std::ios::trunc);
    c << "host_id = " << host_id(i) << "\n"
      << "coordinator = " << list(kAgentPort) << "\n"
      << "coordinator_pub = " << list(kPubPort) << "\n"
      << "state_dir = " << d << "/state\n"
      << "insecure_dev = true\n"
      << "heartbeat_interval_ms = " << kHeartbeatMs << "\n"
      << "\n[service.demo]\n"
      << "driver = binary\n"
      << "root = " << root(i) << "\n"
      << "restart_command = " << source_dir() << "/demo/restart-service " << root(i) << " " << kServicePort << "\n"
      << "http_probe = http://127.0.0.1:" << kServicePort << "/health\n"
      << "min_healthy_ms = 300\nhealthy_deadline_ms = 4000\nprobe_interval_ms = 100\n";
    c.close();
    agents_[static_cast<size_t>(i)] = Process(
        lab_.wrap(kAgentNs + i, {bin_dir() + "/agent/gantry-agent", "--config", d + "/agent.conf"}), d + "/agent.log");
  }

  // The CLI in the operator's namespace, given every coordinator: it follows the leader.
  CmdResult cli(const std::vector<std::string>& args, int timeout_ms = 20000) {
    // 3 s per endpoint: a silent one (cut off, or not serving yet) leaves time for the others.
    std::vector<std::string> argv = {bin_dir() + "/cli/gantry", "--coordinator", list(kOperatorPort), "--timeout-ms",
                                     "3000"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(lab_.wrap(kOperatorNs, argv), timeout_ms);
  }

  std::string make_release(const std::string& version) {
    const std::string out = dir_.sub("releases/" + version + ".tar");
    const auto r = run({source_dir() + "/scripts/make-demo-release", "--version", version, "--behaviour", "healthy",
                        "--out", out, "--binary", bin_dir() + "/demo/gantry-demo-service"},
                       60000);
    if (r.exit_code != 0) throw std::runtime_error("make-demo-release: " + r.err);
    return out;
  }

  std::optional<std::string> served_version(int i) {
    const auto r = lab_.http_get(kAgentNs + i, kServicePort, "/");
    if (!r || r->status != 200) return std::nullopt;
    const auto at = r->body.find("version=");
    if (at == std::string::npos) return std::nullopt;
    const auto end = r->body.find_first_of(" \t\r\n", at + 8);
    return r->body.substr(at + 8, end == std::string::npos ? std::string::npos : end - at - 8);
  }

  nlohmann::json hosts() { return json_of(cli({"--json", "hosts"}, 15000)); }
  nlohmann::json rollout(uint64_t id) { return json_of(cli({"--json", "rollout", "show", std::to_string(id)}, 15000)); }
  int online() {
    int n = 0;
    auto j = hosts();
    if (j.contains("hosts"))
      for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
    return n;
  }

  // iptables in coordinator k's namespace: its TCP to every etcd member's client port dropped
  // ("-A") or let through again ("-D"). Its path to the agents and the other coordinators stays.
  bool firewall_etcd(int k, const char* op) {
    bool ok = true;
    for (int m = 0; m < etcd_.size(); ++m) {
      const auto r =
          run(lab_.wrap(kCoordinatorNs + k, {"iptables", "-w", "5", op, "OUTPUT", "-p", "tcp", "-d", lab_.address(m),
                                             "--dport", std::to_string(etcd_.client_port(m)), "-j", "DROP"}),
              20000);
      if (r.exit_code != 0) {
        std::cerr << "[ha-netns] iptables " << op << " in c" << k + 1 << ": " << r.err << r.out << "\n";
        ok = false;
      }
    }
    return ok;
  }

  std::string diagnostics() {
    std::string d;
    for (int k = 0; k < kCoordinators; ++k)
      d += "\n--- c" + std::to_string(k + 1) + " coordinator log ---\n" + tail(coordinator_log(k));
    for (int i = 0; i < kAgents; ++i) d += "\n--- " + host_id(i) + " agent.log ---\n" + tail(agent_log(i), 2500);
    return d + "\n" + etcd_.diagnostics(1500);
  }

 private:
  NetnsLab& lab_;
  const EtcdCluster& etcd_;
  TempDir dir_;
  std::vector<Process> coordinators_;
  std::vector<Process> agents_;
};

TEST(HaNetns, LeaderCutOffFromEtcdStopsWithinItsLeaseAndAStandbyFinishesTheRollout) {
  const std::string why = netns_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "network namespace test skipped: " << why;

  NetnsLab lab(kNamespaces);
  EtcdClusterOptions eo;
  eo.host = [&](int m) { return lab.address(m); };
  eo.wrap = [&](int m, const std::vector<std::string>& argv) { return lab.wrap(m, argv); };
  eo.http_get = [&](int m, int port, const std::string& path, int timeout_ms) {
    return lab.http_get(m, port, path, timeout_ms);
  };
  EtcdCluster etcd(kEtcd, eo);
  HaNet f(lab, etcd);

  for (int k = 0; k < kCoordinators; ++k) f.start_coordinator(k);
  ASSERT_GE(f.leader(30000), 0) << f.diagnostics();
  for (int i = 0; i < kAgents; ++i) f.start_agent(i);
  ASSERT_TRUE(wait_until([&] { return f.online() == kAgents; }, 40000, 200)) << f.hosts().dump(2) << f.diagnostics();
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v1", "--release", f.make_release("v1"),
                  "--batches", "100%", "--min-healthy-time", "200", "--wait"},
                 120000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();

  // The upload of v2 is acknowledged once every coordinator holds it (docs/HIGH_AVAILABILITY.md,
  // "Releases on every coordinator"): the cut below cannot leave the only copy on the coordinator
  // being cut off (before that promise, a cut 1.6 s after the upload, before the standbys' 2 s
  // prefetch pass, left the new leader without v2 and the rollout rolled back).
  const std::string v2 = f.make_release("v2");
  r = f.cli({"--json", "release", "upload", v2, "--service", "demo", "--version", "v2"}, 60000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  const std::string v2_sha = text_of(json_of(r), "sha256");
  ASSERT_EQ(v2_sha.size(), 64u) << r.out;
  for (int k = 0; k < kCoordinators; ++k)
    ASSERT_TRUE(std::filesystem::exists(f.coordinator_dir(k) + "/artifacts/" + v2_sha))
        << "v2 not on coordinator " << k + 1 << " when its upload was acknowledged" << f.diagnostics();

  // v2 one host at a time, with a pause between batches: the cut comes mid-rollout.
  r = f.cli(
      {"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--batches", "1", "--batch-delay", "1000",
       "--min-healthy-time", "300", "--max-failures", "0", "--unknown-hosts", "wait", "--unknown-wait", "10m"},
      60000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  const uint64_t id = number_of(json_of(r), "id");
  ASSERT_GT(id, 0u) << r.out;

  // Cut when host-2's order is in flight (or, if the poll misses that, once it is done).
  std::string at_cut;
  ASSERT_TRUE(wait_until(
      [&] {
        const auto ro = f.rollout(id);
        const std::string s = host_state(ro, "host-2");
        if (s == "ordered" || s == "healthy") at_cut = "host-2 " + s;
        return !at_cut.empty();
      },
      60000, 50))
      << f.rollout(id).dump(2) << f.diagnostics();
  const int old = f.leader(5000);
  ASSERT_GE(old, 0) << f.diagnostics();
  const uint64_t old_epoch = number_of(f.status(old), "epoch");
  const auto cut = Clock::now();
  ASSERT_TRUE(f.firewall_etcd(old, "-A")) << "iptables refused the rule (scripts/install-deps installs iptables)";
  std::cout << "[ha-netns] c" << old + 1 << " (epoch " << old_epoch << ") cut off from etcd with " << at_cut << "\n";

  // It stops: exit 75 (EX_TEMPFAIL) once its lease may have expired.
  const auto exited = f.coordinator(old).wait_exit(30000);
  const int64_t exit_ms = ms_since(cut);
  ASSERT_TRUE(exited.has_value()) << "the cut-off leader still runs 30 s after the cut" << f.diagnostics();
  EXPECT_EQ(*exited, 75) << f.coordinator_log(old);
  std::cout << "[ha-netns] c" << old + 1 << " exited with " << *exited << " " << exit_ms
            << " ms after the cut (lease TTL " << kLeaseTtlS * 1000 << " ms)\n";

  // A standby takes over.
  const int now = f.leader(30000, old);
  ASSERT_GE(now, 0) << "no standby took over" << f.diagnostics();
  const uint64_t new_epoch = number_of(f.status(now), "epoch");
  std::cout << "[ha-netns] c" << now + 1 << " leads (epoch " << new_epoch << ") " << ms_since(cut)
            << " ms after the cut\n";
  EXPECT_GT(new_epoch, old_epoch);
  // Started again as systemd would, still cut off: it stands by without reaching etcd.
  f.start_coordinator(old);

  // The rollout reaches the end it would have without the cut.
  nlohmann::json ro;
  ASSERT_TRUE(wait_until(
      [&] {
        auto x = f.rollout(id);
        if (!x.is_null()) ro = x;
        return is_terminal_phase(text_of(ro, "phase"));
      },
      120000, 200))
      << ro.dump(2) << f.diagnostics();
  EXPECT_EQ(text_of(ro, "phase"), "succeeded") << ro.dump(2) << f.diagnostics();
  std::cout << "[ha-netns] rollout " << id << " " << text_of(ro, "phase") << " " << ms_since(cut)
            << " ms after the cut\n";

  nlohmann::json hosts;
  EXPECT_TRUE(wait_until(
      [&] {
        hosts = f.hosts();
        for (int i = 0; i < kAgents; ++i)
          if (f.served_version(i) != "v2" || recorded_version(hosts, f.host_id(i)) != "v2") return false;
        return true;
      },
      30000, 200))
      << hosts.dump(2) << f.diagnostics();
  // The leader's own /status: a standby answers `status` read-only, without the desired state.
  // The leader's /status (its snapshot is rebuilt when read: polled until it shows the rollout's end).
  nlohmann::json st;
  EXPECT_TRUE(wait_until(
      [&] {
        const int leading = f.leader(5000);
        st = leading < 0 ? nlohmann::json() : f.status(leading);
        return st.contains("desired") && st["desired"].size() == 1u && text_of(st["desired"][0], "version") == "v2";
      },
      15000, 200))
      << "the desired state is not v2\n"
      << st.dump(2);

  // No order ran twice; nothing was acted on for the deposed leader once a newer one was heard.
  int refused = 0;
  for (int i = 0; i < kAgents; ++i) {
    const std::string log = f.agent_log(i);
    for (const auto& [order, n] : accepted_order_counts(log))
      EXPECT_EQ(n, 1) << f.host_id(i) << " ran order " << order << " " << n << " times\n" << tail(log);
    const auto t = read_epoch_timeline(log);
    EXPECT_TRUE(t.violations.empty()) << f.host_id(i) << ":\n" << ::testing::PrintToString(t.violations);
    EXPECT_GE(t.highest, new_epoch) << f.host_id(i) << " never heard from the new leader\n" << tail(log);
    refused += t.refused_stale;
  }
  std::cout << "[ha-netns] agents refused " << refused << " message(s) of a deposed coordinator\n";

  // The path back: the restarted coordinator reaches etcd again and stands by (its etcd client
  // reconnects once the TCP connects it had in flight give up or get through).
  ASSERT_TRUE(f.firewall_etcd(old, "-D"));
  const auto healed = Clock::now();
  EXPECT_TRUE(wait_until([&] { return text_of(f.status(old), "role") == "standby"; }, 60000, 200))
      << f.status(old).dump(2) << f.diagnostics();
  std::cout << "[ha-netns] c" << old + 1 << " stands by " << ms_since(healed) << " ms after its path to etcd is back\n";
  EXPECT_EQ(f.leader(1000), now);
}

}  // namespace
