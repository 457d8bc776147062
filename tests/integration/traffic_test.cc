// Issue 19's promise with real parts: a real HAProxy (health checks every 500 ms, fall 2,
// rise 2, retries 0) in front of five real demo services managed by real agents and a real
// coordinator, a load client counting every failed request and which version answered,
// through an update, the automatic rollback of a bad release and `gantry rollback`.
#include <gtest/gtest.h>

#include <memory>

#include "tests/support/fleet.h"
#include "tests/support/haproxy.h"
#include "tests/support/load_client.h"

using namespace gantry::testing;

namespace {

constexpr int kHosts = 5;
constexpr int kRate = 200;  // requests/s through HAProxy
// Each request is in flight for 20 ms at the service: a drain has work to wait for.
const char* kPath = "/work?ms=20";

int online_hosts(Fleet& f) {
  auto j = json_of(f.cli({"--json", "hosts"}, 10000));
  int n = 0;
  if (j.contains("hosts"))
    for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
  return n;
}

// The agents' [service.demo]: probes on the service's own port, HAProxy server web<i+1>.
FleetOptions traffic_options(const std::shared_ptr<std::string>& haproxy_socket, const std::string& demo_args = "") {
  FleetOptions o;
  o.service_section = [haproxy_socket, demo_args](int i, int port, const std::string& root) {
    std::string env = demo_args.empty() ? "" : "GANTRY_DEMO_ARGS='" + demo_args + "' ";
    return "driver = binary\n"
           "root = " +
           root +
           "\n"
           "restart_command = " +
           env + source_dir() + "/demo/restart-service " + root + " " + std::to_string(port) +
           "\n"
           "restart_timeout_ms = 15000\n"
           "http_probe = http://127.0.0.1:" +
           std::to_string(port) +
           "/health\n"
           "probe_interval_ms = 100\n"
           "min_healthy_ms = 500\n"
           "healthy_deadline_ms = 5000\n"
           "haproxy_socket = " +
           *haproxy_socket +
           "\n"
           "haproxy_server = " +
           Haproxy::backend() + "/" + Haproxy::server(i) +
           "\n"
           "haproxy_drain_timeout_ms = 10000\n"
           "haproxy_up_timeout_ms = 10000\n";
  };
  return o;
}

// The newest rollout of the demo service.
uint64_t newest_rollout(Fleet& f) {
  auto h = json_of(f.cli({"--json", "history", "demo"}, 10000));
  if (!h.contains("rollouts") || h["rollouts"].empty()) return 0;
  return h["rollouts"][0].value("id", 0ULL);
}

// Every host of rollout `id` has, in its timeline in the record, each traffic step of its update
// in order (drained: swapping began; swapped: restarting began; restarted: verifying began;
// verified: allowing traffic began; traffic allowed), then its result; and the human view has a
// line per host.
void expect_traffic_timelines(Fleet& f, uint64_t id) {
  const std::vector<std::string> steps = {"draining",  "waiting_inflight", "swapping",        "restarting",
                                          "verifying", "allowing_traffic", "traffic_allowed", "healthy"};
  auto r = f.cli({"--json", "rollout", "show", std::to_string(id)}, 10000);
  auto j = json_of(r);
  ASSERT_TRUE(j.contains("hosts")) << r.out << r.err;
  ASSERT_EQ(j["hosts"].size(), static_cast<size_t>(kHosts));
  for (const auto& h : j["hosts"]) {
    const auto& tl = h["timeline"];
    size_t next = 0;
    int64_t last_agent_at = 0;
    for (const auto& t : tl) {
      const std::string phase = t.value("phase", "");
      EXPECT_GT(t.value("received_ms", 0LL), 0) << t.dump();
      if (phase != "healthy") {
        const int64_t at = t.value("at_ms", 0LL);
        EXPECT_GE(at, last_agent_at) << "phases out of order on the agent's clock: " << tl.dump();
        last_agent_at = at;
      }
      if (next < steps.size() && phase == steps[next]) ++next;
    }
    EXPECT_EQ(next, steps.size()) << h.value("host_id", "") << " lacks " << (next < steps.size() ? steps[next] : "")
                                  << " (in order): " << tl.dump();
  }
  auto human = f.cli({"rollout", "show", std::to_string(id)}, 10000);
  ASSERT_EQ(human.exit_code, 0) << human.err;
  const auto section = human.out.find("Timeline (when each step began):");
  ASSERT_NE(section, std::string::npos) << human.out;
  std::cout << "[traffic] " << human.out.substr(section, human.out.find("\n\n", section) - section) << std::endl;
  for (int i = 0; i < kHosts; ++i) {
    const std::string& id_i = f.host_id(i);
    auto at = human.out.find("\n  " + id_i + " ");
    ASSERT_NE(at, std::string::npos) << id_i << " has no timeline line:\n" << human.out;
    const std::string line = human.out.substr(at + 1, human.out.find('\n', at + 1) - at - 1);
    EXPECT_NE(line.find("  swapping +"), std::string::npos) << line;
    EXPECT_NE(line.find("  traffic allowed +"), std::string::npos) << line;
  }
}

class TrafficTest : public ::testing::Test {
 protected:
  std::shared_ptr<std::string> socket = std::make_shared<std::string>();
  std::unique_ptr<Fleet> fleet;
  std::unique_ptr<Haproxy> haproxy;
  std::unique_ptr<LoadClient> load;

  void SetUp() override {
    if (haproxy_binary().empty()) GTEST_SKIP() << "haproxy is not installed (scripts/install-deps installs it)";
  }

  void start(const std::string& demo_args = "") {
    fleet = std::make_unique<Fleet>(kHosts, traffic_options(socket, demo_args));
    std::vector<int> ports;
    for (int i = 0; i < kHosts; ++i) ports.push_back(fleet->port(i));
    std::string dir = fleet->dir() + "/haproxy";
    ASSERT_EQ(run({"mkdir", "-p", dir}).exit_code, 0);
    haproxy = std::make_unique<Haproxy>(dir, ports);
    *socket = haproxy->socket();
    fleet->start_coordinator();
    fleet->start_all_agents();
    ASSERT_TRUE(wait_until([&] { return online_hosts(*fleet) == kHosts; }, 20000)) << fleet->diagnostics();
  }

  CmdResult rollout(const std::string& version, const std::string& behaviour, const std::string& batches) {
    auto rel = fleet->make_release(version, behaviour);
    return fleet->cli({"rollout", "start", "--service", "demo", "--version", version, "--release", rel, "--batches",
                       batches, "--wait"});
  }

  std::string why(const LoadCounts& c) {
    std::string s = c.summary();
    for (const auto& x : c.samples) s += "\n  " + x;
    return s + "\n" + fleet->diagnostics();
  }
};

TEST_F(TrafficTest, UpdateAutomaticRollbackAndOperatorRollbackFailNoRequest) {
  start();
  auto r = rollout("v1", "healthy", "100%");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  ASSERT_TRUE(haproxy->wait_all_up(10000)) << haproxy->log();

  load = std::make_unique<LoadClient>(haproxy->port(), kPath, kRate);
  load->start();

  r = rollout("v2", "healthy", "1,2,2");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  const uint64_t update_id = newest_rollout(*fleet);
  for (int i = 0; i < kHosts; ++i) EXPECT_EQ(fleet->served_version(i), "v2") << "host " << i;
  LoadCounts update = load->take();
  std::cout << "[traffic] update v1 -> v2: " << update.summary() << std::endl;
  EXPECT_GT(update.requests, 0u);
  EXPECT_EQ(update.failed(), 0u) << why(update);
  EXPECT_GT(update.by_version["v2"], 0u);
  expect_traffic_timelines(*fleet, update_id);

  // A release that fails its health check: the first host reverts, the rollout rolls back.
  r = rollout("v3", "unhealthy", "1,2,2");
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  for (int i = 0; i < kHosts; ++i) EXPECT_EQ(fleet->served_version(i), "v2") << "host " << i << fleet->diagnostics();
  LoadCounts bad = load->take();
  std::cout << "[traffic] bad v3, automatic rollback: " << bad.summary() << std::endl;
  EXPECT_EQ(bad.failed(), 0u) << why(bad);
  EXPECT_EQ(bad.by_version.count("v3"), 0u) << "the bad release answered users: " << why(bad);

  // The operator rolls the service back to the revision before v2 (v1). Without batch flags the
  // rollback takes the plan of the rollout it reverts (v2's, batches 1,2,2), and says so first.
  const std::string from = "batches 1, 2, 2 (from rollout " + std::to_string(update_id) + ", which this reverts)";
  r = fleet->cli({"rollback", "--service", "demo", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(from), std::string::npos) << r.out;
  std::cout << "[traffic] gantry rollback --dry-run:\n" << r.out << std::flush;
  r = fleet->cli({"rollback", "--service", "demo", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  EXPECT_NE(r.out.find("Rollback of demo to v1 (revision 1), reverting rollout " + std::to_string(update_id)),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(from), std::string::npos) << r.out;
  const auto back_view = json_of(fleet->cli({"--json", "rollout", "show", std::to_string(newest_rollout(*fleet))}));
  EXPECT_EQ(back_view.value("kind", ""), "rollback");
  EXPECT_EQ(back_view["plan"]["batches"], nlohmann::json::parse("[1, 2, 2]")) << back_view["plan"].dump();
  EXPECT_EQ(back_view["batches"].size(), 3u);
  for (int i = 0; i < kHosts; ++i) EXPECT_EQ(fleet->served_version(i), "v1") << "host " << i;
  LoadCounts back = load->stop();
  std::cout << "[traffic] gantry rollback: " << back.summary() << std::endl;
  EXPECT_EQ(back.failed(), 0u) << why(back);
  EXPECT_GT(back.by_version["v1"], 0u);
}

// A service that exits at once on SIGTERM, dropping what it is serving: the drain before its
// restart still leaves it nothing in flight, so no request fails.
TEST_F(TrafficTest, AServiceThatDoesNotDrainItselfLosesNoRequestEither) {
  start("--no-graceful");
  auto r = rollout("v1", "healthy", "100%");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  ASSERT_TRUE(haproxy->wait_all_up(10000)) << haproxy->log();
  load = std::make_unique<LoadClient>(haproxy->port(), kPath, kRate);
  load->start();
  r = rollout("v2", "healthy", "1,2,2");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << fleet->diagnostics();
  LoadCounts c = load->stop();
  std::cout << "[traffic] update v1 -> v2, services without a graceful stop: " << c.summary() << std::endl;
  EXPECT_GT(c.requests, 0u);
  EXPECT_EQ(c.failed(), 0u) << why(c);
  EXPECT_NE(read_file(fleet->root(0) + "/service.log").find("not graceful"), std::string::npos)
      << "the flag did not reach the service";
}

}  // namespace
