// Start-first for binary services with real parts: five real agents, each running the demo
// service in two slots (two ports) behind a real HAProxy that knows both slots of every host as
// servers h<N>-a and h<N>-b; a load client counts every failed request and which version
// answered. An update starts the new release in the free slot beside the old one, verifies it
// and gives it traffic before the old one leaves; a bad release is stopped without ever getting
// a request; an agent killed right after the switch of `current` comes back consistent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>

#include "common/util/fs.h"
#include "tests/support/fleet.h"
#include "tests/support/haproxy.h"
#include "tests/support/load_client.h"

using namespace gantry::testing;

namespace {

constexpr int kRate = 200;  // requests/s through HAProxy
const char* kPath = "/work?ms=20";

std::string server_name(int host, const std::string& slot) { return "h" + std::to_string(host + 1) + "-" + slot; }

struct SlotPorts {
  int a = 0, b = 0;
};

// The agents' [service.demo]: start-first in slots a and b, probes on the slot's port, the
// slot's HAProxy server.
FleetOptions start_first_options(const std::shared_ptr<std::string>& socket, std::vector<SlotPorts> ports) {
  FleetOptions o;
  o.service_section = [socket, ports](int i, int, const std::string& root) {
    const std::string tool = source_dir() + "/demo/slot-service";
    const SlotPorts& p = ports.at(static_cast<size_t>(i));
    return "driver = binary\n"
           "root = " +
           root +
           "\n"
           "start_order = start-first\n"
           "slots = a:" +
           std::to_string(p.a) + " b:" + std::to_string(p.b) +
           "\n"
           "start_command = " +
           tool +
           " start \"$GANTRY_ROOT\" \"$GANTRY_SLOT\" \"$GANTRY_SLOT_PORT\"\n"
           "stop_command = " +
           tool +
           " stop \"$GANTRY_ROOT\" \"$GANTRY_SLOT\"\n"
           "start_timeout_ms = 15000\n"
           "http_probe = http://127.0.0.1:{port}/health\n"
           "probe_interval_ms = 100\n"
           "min_healthy_ms = 500\n"
           "healthy_deadline_ms = 4000\n"
           "haproxy_socket = " +
           *socket +
           "\n"
           "haproxy_server = " +
           Haproxy::backend() + "/h" + std::to_string(i + 1) +
           "-{slot}\n"
           "haproxy_drain_timeout_ms = 10000\n"
           "haproxy_up_timeout_ms = 10000\n";
  };
  return o;
}

int online_hosts(Fleet& f) {
  auto j = json_of(f.cli({"--json", "hosts"}, 10000));
  int n = 0;
  if (j.contains("hosts"))
    for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
  return n;
}

uint64_t newest_rollout(Fleet& f) {
  auto h = json_of(f.cli({"--json", "history", "demo"}, 10000));
  if (!h.contains("rollouts") || h["rollouts"].empty()) return 0;
  return h["rollouts"][0].value("id", 0ULL);
}

// "<version>" a slot's link names, "" when there is none.
std::string slot_link(const std::string& root, const std::string& slot) {
  auto t = gantry::fs::read_symlink(root + "/slots/" + slot);
  if (!t) return "";
  return t->substr(t->rfind('/') + 1);
}

std::string current_of(const std::string& root) {
  auto t = gantry::fs::read_symlink(root + "/current");
  return t ? t->substr(t->rfind('/') + 1) : "";
}

// The version the demo service on `port` answers with ("" when nothing answers).
std::string version_on(int port) {
  auto r = http_get(port, "/version", 1000);
  if (!r || r->status != 200) return "";
  std::string v = r->body;
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.pop_back();
  return v;
}

class StartFirstTest : public ::testing::Test {
 protected:
  std::shared_ptr<std::string> socket = std::make_shared<std::string>();
  std::vector<SlotPorts> ports;
  std::unique_ptr<Fleet> fleet;
  std::unique_ptr<Haproxy> haproxy;
  std::unique_ptr<LoadClient> load;
  int hosts = 0;

  void SetUp() override {
    if (haproxy_binary().empty()) GTEST_SKIP() << "haproxy is not installed (scripts/install-deps installs it)";
  }

  void start(int n) {
    hosts = n;
    std::vector<int> server_ports;
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
      SlotPorts p{free_tcp_port(), 0};
      do p.b = free_tcp_port();
      while (p.b == p.a);
      ports.push_back(p);
      server_ports.insert(server_ports.end(), {p.a, p.b});
      names.insert(names.end(), {server_name(i, "a"), server_name(i, "b")});
    }
    fleet = std::make_unique<Fleet>(n, start_first_options(socket, ports));
    std::string dir = fleet->dir() + "/haproxy";
    ASSERT_EQ(run({"mkdir", "-p", dir}).exit_code, 0);
    HaproxyOptions ho;
    ho.server_names = names;
    haproxy = std::make_unique<Haproxy>(dir, server_ports, ho);
    *socket = haproxy->socket();
    fleet->start_coordinator();
    fleet->start_all_agents();
    ASSERT_TRUE(wait_until([&] { return online_hosts(*fleet) == n; }, 20000)) << fleet->diagnostics();
  }

  CmdResult rollout(const std::string& version, const std::string& behaviour, const std::string& batches) {
    auto rel = fleet->make_release(version, behaviour);
    return fleet->cli({"rollout", "start", "--service", "demo", "--version", version, "--release", rel, "--batches",
                       batches, "--wait"});
  }

  int port_of(int i, const std::string& slot) const {
    return slot == "a" ? ports.at(static_cast<size_t>(i)).a : ports.at(static_cast<size_t>(i)).b;
  }

  // Host i runs `version` in `slot` alone: current and the slot's link name it, the other slot
  // has no link and nothing answers on its port, and HAProxy has the slot's server UP.
  void expect_live(int i, const std::string& version, const std::string& slot) {
    const std::string other = slot == "a" ? "b" : "a";
    const std::string root = fleet->root(i);
    EXPECT_EQ(current_of(root), version) << "host " << i;
    EXPECT_EQ(slot_link(root, slot), version) << "host " << i;
    EXPECT_EQ(slot_link(root, other), "") << "host " << i << ": the old slot's link is left";
    EXPECT_EQ(version_on(port_of(i, slot)), version) << "host " << i;
    EXPECT_EQ(version_on(port_of(i, other)), "") << "host " << i << ": the old instance still answers";
    EXPECT_TRUE(wait_until([&] { return haproxy->status_of(server_name(i, slot)) == "UP"; }, 10000))
        << server_name(i, slot) << " is " << haproxy->status_of(server_name(i, slot));
    const std::string idle = haproxy->status_of(server_name(i, other));
    EXPECT_NE(idle, "UP") << server_name(i, other) << " takes traffic at rest";
  }

  std::string why(const LoadCounts& c) {
    std::string s = c.summary();
    for (const auto& x : c.samples) s += "\n  " + x;
    return s + "\n" + fleet->diagnostics();
  }
};

TEST_F(StartFirstTest, UpdatesSideBySideAndABadReleaseNeverGetsTraffic) {
  start(5);
  auto r = rollout("v1", "healthy", "100%");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  for (int i = 0; i < hosts; ++i) expect_live(i, "v1", "a");

  load = std::make_unique<LoadClient>(haproxy->port(), kPath, kRate);
  load->start();

  r = rollout("v2", "healthy", "1,2,2");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  LoadCounts update = load->take();
  std::cout << "[start-first] update v1 -> v2: " << update.summary() << std::endl;
  EXPECT_GT(update.requests, 0u);
  EXPECT_EQ(update.failed(), 0u) << why(update);
  EXPECT_GT(update.by_version["v2"], 0u);
  for (int i = 0; i < hosts; ++i) expect_live(i, "v2", "b");

  // Each host's record: the new instance verified and given traffic before the old one drained.
  const uint64_t id = newest_rollout(*fleet);
  auto view = json_of(fleet->cli({"--json", "rollout", "show", std::to_string(id)}, 10000));
  ASSERT_TRUE(view.contains("hosts")) << view.dump();
  const std::vector<std::string> steps = {"swapping",        "restarting", "verifying",        "allowing_traffic",
                                          "traffic_allowed", "draining",   "waiting_inflight", "healthy"};
  for (const auto& h : view["hosts"]) {
    size_t next = 0;
    for (const auto& t : h["timeline"])
      if (next < steps.size() && t.value("phase", "") == steps[next]) ++next;
    EXPECT_EQ(next, steps.size()) << h.value("host_id", "") << " lacks " << (next < steps.size() ? steps[next] : "")
                                  << " (in order): " << h["timeline"].dump();
  }

  // A release that fails its health check: started beside v2 in slot a, never given traffic,
  // stopped; v2 keeps serving from slot b, untouched; the rollout rolls back.
  r = rollout("v3", "unhealthy", "1,2,2");
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  LoadCounts bad = load->take();
  std::cout << "[start-first] bad v3: " << bad.summary() << std::endl;
  EXPECT_EQ(bad.failed(), 0u) << why(bad);
  EXPECT_EQ(bad.by_version.count("v3"), 0u) << "the bad release answered users: " << why(bad);
  EXPECT_GT(bad.by_version["v2"], 0u);
  const std::string log =
      fleet->agent_log(0) + fleet->agent_log(1) + fleet->agent_log(2) + fleet->agent_log(3) + fleet->agent_log(4);
  EXPECT_NE(log.find("kept running in slot b untouched"), std::string::npos) << fleet->diagnostics();
  for (int i = 0; i < hosts; ++i) {
    EXPECT_EQ(current_of(fleet->root(i)), "v2") << "host " << i;
    EXPECT_EQ(version_on(port_of(i, "b")), "v2") << "host " << i;
  }

  // The operator rolls back to v1: start-first again, each host into its free slot.
  r = fleet->cli({"rollback", "--service", "demo", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  LoadCounts back = load->stop();
  std::cout << "[start-first] gantry rollback: " << back.summary() << std::endl;
  EXPECT_EQ(back.failed(), 0u) << why(back);
  EXPECT_GT(back.by_version["v1"], 0u);
  for (int i = 0; i < hosts; ++i) EXPECT_EQ(current_of(fleet->root(i)), "v1") << "host " << i;
}

// The agent is killed right after it switched `current` to the new release (the old instance
// still runs, drained): restarted, it verifies the new instance, stops the old one and reports
// once; the host ends with one instance, the new one, in traffic.
TEST_F(StartFirstTest, AnAgentKilledAfterTheSwitchComesBackConsistent) {
  start(1);
  auto r = rollout("v1", "healthy", "100%");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  expect_live(0, "v1", "a");

  fleet->kill_agent(0);
  fleet->start_agent(0, {{"GANTRY_AGENT_CRASH_AT", "after_promote"}});
  ASSERT_TRUE(wait_until([&] { return online_hosts(*fleet) == 1; }, 20000)) << fleet->diagnostics();
  auto rel = fleet->make_release("v2", "healthy");
  r = fleet->cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches", "100%"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(wait_until([&] { return !fleet->agent_running(0); }, 30000)) << fleet->diagnostics();
  // Killed between the switch and the stop of the old instance: both run, current names v2.
  EXPECT_EQ(current_of(fleet->root(0)), "v2");
  EXPECT_EQ(version_on(port_of(0, "a")), "v1");
  EXPECT_EQ(version_on(port_of(0, "b")), "v2");

  fleet->kill_agent(0);
  fleet->start_agent(0, {});
  ASSERT_TRUE(wait_until(
      [&] {
        auto v = json_of(fleet->cli({"--json", "rollout", "show", std::to_string(newest_rollout(*fleet))}, 10000));
        return v.value("phase", "") == "succeeded";
      },
      60000))
      << fleet->diagnostics();
  expect_live(0, "v2", "b");
  const std::string log = fleet->agent_log(0);
  EXPECT_NE(log.find("start-first, resumed after the switch of current"), std::string::npos) << log;
}

// The agent is killed while both instances are in traffic, before the switch of `current`:
// restarted, it starts the order over (the new slot is drained first, then restarted, verified
// and allowed again) while the old instance serves; no request fails.
TEST_F(StartFirstTest, AnAgentKilledBeforeTheSwitchStartsOverWithoutAFailedRequest) {
  start(1);
  auto r = rollout("v1", "healthy", "100%");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  expect_live(0, "v1", "a");

  fleet->kill_agent(0);
  fleet->start_agent(0, {{"GANTRY_AGENT_CRASH_AT", "start_first_allowed"}});
  ASSERT_TRUE(wait_until([&] { return online_hosts(*fleet) == 1; }, 20000)) << fleet->diagnostics();
  load = std::make_unique<LoadClient>(haproxy->port(), kPath, kRate);
  load->start();
  auto rel = fleet->make_release("v2", "healthy");
  r = fleet->cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches", "100%"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(wait_until([&] { return !fleet->agent_running(0); }, 30000)) << fleet->diagnostics();
  // Killed with both instances serving and `current` still v1.
  EXPECT_EQ(current_of(fleet->root(0)), "v1");
  EXPECT_EQ(version_on(port_of(0, "a")), "v1");
  EXPECT_EQ(version_on(port_of(0, "b")), "v2");
  EXPECT_EQ(haproxy->status_of(server_name(0, "b")), "UP");

  fleet->kill_agent(0);
  fleet->start_agent(0, {});
  ASSERT_TRUE(wait_until(
      [&] {
        auto v = json_of(fleet->cli({"--json", "rollout", "show", std::to_string(newest_rollout(*fleet))}, 10000));
        return v.value("phase", "") == "succeeded";
      },
      60000))
      << fleet->diagnostics();
  LoadCounts c = load->stop();
  std::cout << "[start-first] killed before the switch, restarted: " << c.summary() << std::endl;
  EXPECT_GT(c.requests, 0u);
  EXPECT_EQ(c.failed(), 0u) << why(c);
  EXPECT_GT(c.by_version["v2"], 0u);
  expect_live(0, "v2", "b");
  EXPECT_NE(fleet->agent_log(0).find("resuming order"), std::string::npos) << fleet->agent_log(0);
}

}  // namespace
