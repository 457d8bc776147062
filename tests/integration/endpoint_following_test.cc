// Agents and operators given a list of coordinator endpoints find the leader by themselves
// (PROTOCOL.md §5.8, docs/CLI.md): real agent and CLI processes, a real coordinator, and
// standbys played by test-side ROUTERs (tests/support/fake_router.h) that answer not_leader.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <memory>

#include "tests/support/durability.h"
#include "tests/support/fake_router.h"
#include "tests/support/fleet.h"

namespace gantry::testing {
namespace {

std::string loopback(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// A standby: every message gets not_leader naming `leader` (empty: no leader known).
FakeRouter::Handler standby_naming(std::map<std::string, std::string> leader) {
  return [leader](const std::string&, const proto::Message& m) -> std::vector<proto::Message> {
    if (const auto* req = std::get_if<proto::OpRequest>(&m)) {
      proto::OpReply r;
      r.request_id = req->request_id;
      if (req->command == "status") {
        r.ok = true;
        // The shape of a standby's status (coordinator/ha/standby_server.cc): the leader's,
        // from the store (rollouts with counts and no hosts, every recorded host unknown).
        r.result = {{"role", "standby"},
                    {"name", "c2"},
                    {"rollouts",
                     {{{"id", 4},
                       {"service", "demo"},
                       {"version", "v7"},
                       {"kind", "rollout"},
                       {"phase", "running"},
                       {"counts", {{"total", 1}, {"ordered", 1}}}}}},
                    {"hosts",
                     {{{"host_id", "host-9"},
                       {"state", "unknown"},
                       {"labels", {{"zone", "eu-1"}}},
                       {"services", {{{"name", "demo"}, {"current_version", "v6"}, {"state", "idle"}}}},
                       {"last_seen_ms_ago", -1}}}}};
        r.result["leader"] = leader.empty() ? nlohmann::json(nullptr) : nlohmann::json(leader);
        return {r};
      }
      r.error = "not_leader: this coordinator (c2) is a standby";
      r.error_code = "not_leader";
      r.leader = leader;
      return {r};
    }
    proto::ErrorMsg e{"not_leader", "this coordinator (c2) is a standby", static_cast<uint16_t>(proto::type_of(m)), ""};
    e.leader = leader;
    return {e};
  };
}

std::map<std::string, std::string> leader_map(const CoordinatorEndpoints& ep) {
  return {{"name", "c1"}, {"agent", ep.agent}, {"pub", ep.pub}, {"operator", ep.operator_}};
}

bool signals_up(Fleet& f, int i) {
  for (const auto& h : hosts_json(f).value("hosts", nlohmann::json::array()))
    if (h.value("host_id", "") == f.host_id(i))
      return h.value("online", false) && h.value("signal_channel", "") == "up";
  return false;
}

TEST(EndpointFollowing, AnAgentMovesPastADeadCoordinatorToTheNextInItsList) {
  FleetOptions o;
  o.insecure = true;
  Fleet f(1, o);
  f.start_coordinator();
  const auto& ep = f.endpoints();
  const std::string dead = loopback(free_tcp_port()), dead_pub = loopback(free_tcp_port());
  // The environment wins over agent.conf's single endpoint.
  f.start_agent(0, {{"GANTRY_AGENT_COORDINATOR", dead + "," + ep.agent},
                    {"GANTRY_AGENT_COORDINATOR_PUB", dead_pub + "," + ep.pub}});
  ASSERT_TRUE(wait_until([&] { return signals_up(f, 0); }, 30000, 100)) << hosts_json(f).dump(2) << f.diagnostics();
  const std::string log = f.agent_log(0);
  EXPECT_NE(log.find("connecting to " + dead), std::string::npos) << log;
  // Nothing listens there: the connection is refused and the next pair is tried at once.
  EXPECT_NE(log.find("the connection to the coordinator at " + dead + " was refused; trying the next at once"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("coordinator at " + dead + " unreachable, trying " + ep.agent), std::string::npos) << log;
  EXPECT_NE(log.find("welcomed by the coordinator"), std::string::npos) << log;
}

TEST(EndpointFollowing, AnAgentFollowsTheLeaderAStandbyNames) {
  FleetOptions o;
  o.insecure = true;
  Fleet f(1, o);
  f.start_coordinator();
  const auto& ep = f.endpoints();
  // First a standby that knows no leader (the agent tries the next endpoint), then one that
  // names the real coordinator, which is not in the agent's list at all.
  FakeRouter lost(standby_naming({}));
  FakeRouter standby(standby_naming(leader_map(ep)));
  const std::string lost_pub = loopback(free_tcp_port()), standby_pub = loopback(free_tcp_port());
  f.start_agent(0, {{"GANTRY_AGENT_COORDINATOR", lost.endpoint() + "," + standby.endpoint()},
                    {"GANTRY_AGENT_COORDINATOR_PUB", lost_pub + "," + standby_pub}});
  ASSERT_TRUE(wait_until([&] { return signals_up(f, 0); }, 30000, 100)) << hosts_json(f).dump(2) << f.diagnostics();
  const std::string log = f.agent_log(0);
  EXPECT_NE(log.find("the standby at " + lost.endpoint() + " knows no leader, trying " + standby.endpoint()),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("following the leader c1 at " + ep.agent + " (broadcasts " + ep.pub + "), as the standby at " +
                     standby.endpoint() + " says"),
            std::string::npos)
      << log;
  // ... and went there at once, not after its backoff (PROTOCOL.md §5.8).
  EXPECT_NE(
      log.find("the coordinator at " + standby.endpoint() + " is a standby; going to the leader it names at once"),
      std::string::npos)
      << log;
  bool hello_at_standby = false;
  for (const auto& r : standby.received()) hello_at_standby |= std::holds_alternative<proto::Hello>(r.message);
  EXPECT_TRUE(hello_at_standby);
  // Its heartbeat datagrams go to the leader's host too (the host of the endpoint it follows).
  EXPECT_TRUE(wait_until(
      [&] { return f.agent_log(0).find("the coordinator receives our heartbeat datagrams") != std::string::npos; },
      20000, 100))
      << f.diagnostics();
}

TEST(EndpointFollowing, TheCliAsksTheLeaderAStandbyNamesAndSkipsADeadEndpoint) {
  FleetOptions o;
  o.insecure = true;
  Fleet f(1, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  const auto& ep = f.endpoints();
  FakeRouter standby(standby_naming(leader_map(ep)));
  const std::string gantry = std::string(GANTRY_BIN_DIR) + "/cli/gantry";
  // A command a standby does not serve: asked again at the leader, and answered there.
  auto hosts = run({gantry, "--coordinator", standby.endpoint(), "--json", "hosts"}, 30000);
  ASSERT_EQ(hosts.exit_code, 0) << hosts.out << hosts.err;
  EXPECT_EQ(json_of(hosts)["hosts"].size(), 1u) << hosts.out;
  EXPECT_NE(hosts.err.find(standby.endpoint() + " is a standby; asking the leader at " + ep.operator_),
            std::string::npos)
      << hosts.err;
  // status from a standby: its answer, and a line saying where the leader is.
  auto status = run({gantry, "--coordinator", standby.endpoint(), "status"}, 30000);
  ASSERT_EQ(status.exit_code, 0) << status.out << status.err;
  EXPECT_EQ(status.out.rfind("answered by a standby; the leader is c1 at " + ep.operator_ + "\n", 0), 0u) << status.out;
  EXPECT_NE(status.out.find("Rollout 4: demo -> v7"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("demo=v6"), std::string::npos) << status.out;
  // A dead endpoint first (nothing listens there): the CLI moves on as soon as the connection
  // is refused, not after --timeout-ms (10 s by default), and asks the next.
  const std::string dead = loopback(free_tcp_port());
  auto listed =
      run({gantry, "--coordinator", dead + "," + ep.operator_, "--json", "hosts"}, 30000, {{"GANTRY_COORDINATOR", ""}});
  ASSERT_EQ(listed.exit_code, 0) << listed.out << listed.err;
  EXPECT_EQ(json_of(listed)["hosts"].size(), 1u) << listed.out;
  EXPECT_NE(listed.err.find("the coordinator at " + dead + " refused the connection; trying " + ep.operator_),
            std::string::npos)
      << listed.err;
  // One that takes the connection and never answers: waited out (--timeout-ms), then the next.
  FakeRouter silent([](const std::string&, const proto::Message&) { return std::vector<proto::Message>{}; });
  auto waited =
      run({gantry, "--coordinator", silent.endpoint() + "," + ep.operator_, "--timeout-ms", "1000", "--json", "hosts"},
          30000, {{"GANTRY_COORDINATOR", ""}});
  ASSERT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_NE(waited.err.find("no answer from the coordinator at " + silent.endpoint() + " within 1000 ms; trying " +
                            ep.operator_),
            std::string::npos)
      << waited.err;
  // The same list from the environment.
  auto env = run({gantry, "--timeout-ms", "1000", "--json", "hosts"}, 30000,
                 {{"GANTRY_COORDINATOR", dead + "," + standby.endpoint()}});
  ASSERT_EQ(env.exit_code, 0) << env.out << env.err;
  EXPECT_EQ(json_of(env)["hosts"].size(), 1u) << env.out;
  // A standby that knows no leader: refused (exit 3), its message shown.
  FakeRouter lost(standby_naming({}));
  auto refused = run({gantry, "--coordinator", lost.endpoint(), "hosts"}, 30000);
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("not_leader: this coordinator (c2) is a standby"), std::string::npos) << refused.err;
}

}  // namespace
}  // namespace gantry::testing

namespace gantry::testing {
namespace {

// A leader whose machine is lost (its connection drops and nothing answers there again): an
// agent with several coordinators does not wait out the Welcome's long period (misses x 10 s
// here: 100 s) but times the dropped connection as a new one, and moves on to the next once
// libzmq's reconnect there is refused.
TEST(EndpointFollowing, AnAgentLeavesADroppedCoordinatorForTheNextInItsList) {
  FleetOptions o;
  o.insecure = true;
  Fleet f(1, o);
  f.start_coordinator();
  const auto& ep = f.endpoints();
  auto lost =
      std::make_unique<FakeRouter>([](const std::string&, const proto::Message& m) -> std::vector<proto::Message> {
        if (!std::holds_alternative<proto::Hello>(m)) return {};
        proto::Welcome w{1, 200, 10, 1};
        w.coordinator_heartbeat_ms = 10000;
        return {w};
      });
  const std::string lost_ep = lost->endpoint(), lost_pub = loopback(free_tcp_port());
  f.start_agent(0, {{"GANTRY_AGENT_COORDINATOR", lost_ep + "," + ep.agent},
                    {"GANTRY_AGENT_COORDINATOR_PUB", lost_pub + "," + ep.pub}});
  ASSERT_TRUE(
      wait_until([&] { return f.agent_log(0).find("welcomed by the coordinator") != std::string::npos; }, 20000, 50))
      << f.diagnostics();
  lost.reset();  // its socket closes: the connection drops, and nothing listens there any more
  ASSERT_TRUE(wait_until([&] { return signals_up(f, 0); }, 30000, 100)) << hosts_json(f).dump(2) << f.diagnostics();
  const std::string log = f.agent_log(0);
  EXPECT_NE(log.find("the connection to the coordinator at " + lost_ep +
                     " dropped; trying the next one unless it "
                     "answers within 2000 ms"),
            std::string::npos)
      << log;
  // libzmq's reconnect there was refused (nothing listens any more): the agent moved on at
  // once, not 1 s after the drop (PROTOCOL.md §5.8).
  EXPECT_NE(log.find("the connection to the coordinator at " + lost_ep + " was refused; trying the next at once"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("coordinator at " + lost_ep + " unreachable, trying " + ep.agent), std::string::npos) << log;
}

}  // namespace
}  // namespace gantry::testing
