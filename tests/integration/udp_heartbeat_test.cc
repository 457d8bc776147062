// Heartbeats as UDP datagrams (PROTOCOL.md §5.7), end to end with real processes: agents move
// their heartbeats off the connection once the coordinator confirms the datagrams arrive, fall
// back when a firewall drops them, start over after a coordinator restart, and the coordinator
// drops forged, replayed and malformed datagrams (played by tests/integration/hostile_client.py,
// an implementation written from the document).
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <string>

#include "tests/support/durability.h"
#include "tests/support/fleet.h"
#include "tests/support/peer.h"

namespace gantry::testing {
namespace {

int http_port(Fleet& f) { return std::stoi(f.endpoints().http.substr(f.endpoints().http.rfind(':') + 1)); }

// The value of a metric line `name value` (name with its labels), -1 if absent.
double metric(const std::string& text, const std::string& name) {
  const std::string needle = "\n" + name + " ";
  auto p = text.find(needle);
  if (p == std::string::npos) return -1;
  return std::stod(text.substr(p + needle.size()));
}

std::string metrics(Fleet& f) {
  auto r = http_get(http_port(f), "/metrics", 5000);
  return r && r->status == 200 ? "\n" + r->body : "";
}

// "127.0.0.1:PORT" from endpoints.json (empty: UDP heartbeats off).
std::string udp_address(Fleet& f) {
  auto j = nlohmann::json::parse(read_file(f.dir() + "/coordinator/endpoints.json"), nullptr, false);
  return j.is_object() ? j.value("udp_heartbeat", "") : "";
}

bool online(Fleet& f, const std::string& host) {
  for (const auto& h : hosts_json(f).value("hosts", nlohmann::json::array()))
    if (h.value("host_id", "") == host) return h.value("online", false);
  return false;
}

const char* kConfirmed = "the coordinator receives our heartbeat datagrams";

TEST(UdpHeartbeat, AgentsMoveHeartbeatsToDatagramsAndComeBackAfterACoordinatorRestart) {
  FleetOptions o;
  o.coordinator_extra_args = {"--coordinator-heartbeat-ms", "1000"};  // its own heartbeats: datagrams too
  Fleet f(2, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  ASSERT_FALSE(udp_address(f).empty()) << read_file(f.dir() + "/coordinator/endpoints.json");
  ASSERT_TRUE(wait_until(
      [&] { return count_of(f.agent_log(0), kConfirmed) == 1 && count_of(f.agent_log(1), kConfirmed) == 1; }, 20000))
      << f.diagnostics();

  // At rest nothing crosses the connections either way: the agents' heartbeats and the
  // coordinator's are datagrams. (At rest the /metrics snapshot is rebuilt when a request finds
  // it older than 5 s: MONITORING.md.) The window starts once the datagrams flow (several per
  // agent counted): a Heartbeat an agent sent on its connection just before the confirmation
  // reached it may still be on its way when the agent logs the confirmation (a fresh clone's
  // run counted 2 such messages in the window when it started at the confirmation).
  std::string m0;
  ASSERT_TRUE(wait_until(
      [&] {
        m0 = metrics(f);
        return metric(m0, "gantry_udp_heartbeats_total") >= 10;
      },
      20000, 200))
      << m0 << f.diagnostics();
  ::usleep(5500 * 1000);
  const std::string m1 = metrics(f);
  EXPECT_EQ(metric(m1, "gantry_messages_received_total"), metric(m0, "gantry_messages_received_total")) << m0 << m1;
  EXPECT_EQ(metric(m1, "gantry_messages_sent_total"), metric(m0, "gantry_messages_sent_total")) << m0 << m1;
  EXPECT_GT(metric(m1, "gantry_udp_heartbeats_total"), metric(m0, "gantry_udp_heartbeats_total")) << m1;
  EXPECT_GT(metric(m1, "gantry_udp_heartbeats_sent_total"), metric(m0, "gantry_udp_heartbeats_sent_total")) << m1;
  // ... and the agents count them as the coordinator's life: none gave it up (3 x 1 s).
  EXPECT_EQ(f.agent_log(0).find("no word from the coordinator"), std::string::npos) << f.agent_log(0);
  EXPECT_EQ(f.agent_log(0).find("no heartbeat datagram from the coordinator"), std::string::npos) << f.agent_log(0);
  EXPECT_EQ(metric(m1, "gantry_hosts_lost_total"), 0) << m1;
  for (const char* r : {"size", "magic", "unknown_session", "mac", "replay"})
    EXPECT_EQ(metric(m1, std::string("gantry_udp_heartbeats_rejected_total{reason=\"") + r + "\"}"), 0) << r;

  // Orders, acknowledgements and reports still go over the connections.
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();

  // A restarted coordinator knows no session: the agents see their connection drop, queue a
  // Hello at once (sent when they have reconnected, without being asked for it) and get a new
  // session.
  f.restart_coordinator();
  ASSERT_TRUE(wait_until([&] { return online_hosts(f) == 2; }, 30000)) << f.diagnostics();
  ASSERT_TRUE(wait_until(
      [&] { return count_of(f.agent_log(0), kConfirmed) == 2 && count_of(f.agent_log(1), kConfirmed) == 2; }, 20000))
      << f.diagnostics();
  for (int i = 0; i < 2; ++i) {
    EXPECT_NE(f.agent_log(i).find("the connection to the coordinator dropped"), std::string::npos) << f.agent_log(i);
    EXPECT_EQ(f.agent_log(i).find("coordinator asks for a hello"), std::string::npos) << f.agent_log(i);
  }

  // A dead agent stops its datagrams too: it becomes unknown.
  f.kill_agent(1, SIGKILL);
  ASSERT_TRUE(wait_until([&] { return !online(f, f.host_id(1)); }, 20000)) << f.diagnostics();
  EXPECT_TRUE(online(f, f.host_id(0)));
}

// Revoking a host's key ends its UDP session at once (Coordinator::disconnect_host): its agent's
// datagrams still arrive, but as an unknown session they are counted and dropped, and they do not
// bring the host back online; the other host keeps its session.
TEST(UdpHeartbeat, ARevokedHostsDatagramsAreAnUnknownSessionAndDoNotKeepItOnline) {
  FleetOptions o;
  o.coordinator_extra_args = {"--coordinator-heartbeat-ms", "1000"};
  Fleet f(2, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  ASSERT_TRUE(wait_until(
      [&] { return count_of(f.agent_log(0), kConfirmed) == 1 && count_of(f.agent_log(1), kConfirmed) == 1; }, 20000))
      << f.diagnostics();
  const std::string unknown = "gantry_udp_heartbeats_rejected_total{reason=\"unknown_session\"}";
  const double before = metric(metrics(f), unknown);
  EXPECT_EQ(before, 0);

  auto r = f.cli({"keys", "revoke", f.host_id(1)}, 20000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(wait_until([&] { return !online(f, f.host_id(1)); }, 10000)) << f.diagnostics();
  EXPECT_NE(f.coordinator_log().find(f.host_id(1) + " is disconnected"), std::string::npos) << f.coordinator_log();
  // Its agent goes on sending datagrams for a while (it learns nothing at rest): each one is now
  // an unknown session.
  ASSERT_TRUE(wait_until([&] { return metric(metrics(f), unknown) > before; }, 10000)) << metrics(f);
  ::usleep(3000 * 1000);  // more than the 2 s the test fleet allows a silent host
  EXPECT_FALSE(online(f, f.host_id(1))) << f.diagnostics();
  EXPECT_TRUE(online(f, f.host_id(0))) << f.diagnostics();
  const std::string m = metrics(f);
  for (const char* reason : {"size", "magic", "mac", "replay"})
    EXPECT_EQ(metric(m, std::string("gantry_udp_heartbeats_rejected_total{reason=\"") + reason + "\"}"), 0)
        << reason << m;
}

// Removes its iptables rule however the test ends.
class DropUdpPort {
 public:
  // Datagrams to `port` (the agents' heartbeats), or from it (the coordinator's) with `from`.
  explicit DropUdpPort(int port, bool from = false)
      : rule_("INPUT -i lo -p udp " + std::string(from ? "--sport " : "--dport ") + std::to_string(port) + " -j DROP") {
    ok_ = run({"sh", "-c", "iptables -I " + rule_}, 30000).exit_code == 0;
  }
  ~DropUdpPort() { lift(); }
  void lift() {
    if (ok_) (void)run({"sh", "-c", "iptables -D " + rule_}, 30000);
    ok_ = false;
  }
  bool ok() const { return ok_; }

 private:
  std::string rule_;
  bool ok_ = false;
};

TEST(UdpHeartbeat, DatagramsDroppedByAFirewallFallBackToTheConnectionWithoutLosingTheHost) {
  // Root and a working iptables (a container without CAP_NET_ADMIN cannot list the rules).
  if (::geteuid() != 0 || run({"sh", "-c", "iptables -S INPUT"}, 10000).exit_code != 0)
    GTEST_SKIP() << "needs root and a working iptables (scripts/install-deps installs it; CI runs as root)";
  FleetOptions o;
  o.coordinator_extra_args = {"--coordinator-heartbeat-ms", "1000"};
  Fleet f(1, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  ASSERT_TRUE(wait_until([&] { return count_of(f.agent_log(0), kConfirmed) == 1; }, 20000)) << f.diagnostics();
  const std::string udp = udp_address(f);
  ASSERT_FALSE(udp.empty());

  DropUdpPort drop(std::stoi(udp.substr(udp.rfind(':') + 1)));
  ASSERT_TRUE(drop.ok()) << "iptables refused the rule";
  // The coordinator notices the silence an interval before the host would expire and says so;
  // the agent heartbeats over its connection again.
  ASSERT_TRUE(wait_until(
      [&] { return f.agent_log(0).find("stopped receiving our heartbeat datagrams") != std::string::npos; }, 20000))
      << f.diagnostics();
  // Three heartbeat timeouts (3 x 10 x 200 ms) later the host has never been lost.
  ::usleep(6000 * 1000);
  const std::string m = metrics(f);
  EXPECT_EQ(metric(m, "gantry_hosts_lost_total"), 0) << m << f.diagnostics();
  EXPECT_TRUE(online(f, f.host_id(0)));
  EXPECT_EQ(f.coordinator_log().find("is unknown"), std::string::npos) << f.coordinator_log();

  // The agent kept sending datagrams: once they get through, the coordinator confirms again.
  drop.lift();
  ASSERT_TRUE(wait_until([&] { return count_of(f.agent_log(0), kConfirmed) == 2; }, 20000)) << f.diagnostics();

  // The other direction: the coordinator's heartbeat datagrams are dropped on their way to the
  // agent. It notices (its period + 2 intervals), says so, and is heartbeated over its
  // connection instead: it never gives the coordinator up (misses x 1 s = 10 s of silence).
  const int port = std::stoi(udp.substr(udp.rfind(':') + 1));
  DropUdpPort deaf(port, /*from=*/true);
  ASSERT_TRUE(deaf.ok());
  ASSERT_TRUE(wait_until(
      [&] { return f.coordinator_log().find("our heartbeat datagrams do not reach it") != std::string::npos; }, 20000))
      << f.diagnostics();
  EXPECT_NE(f.agent_log(0).find("no heartbeat datagram from the coordinator"), std::string::npos);
  ::usleep(12000 * 1000);
  EXPECT_EQ(f.agent_log(0).find("no word from the coordinator"), std::string::npos) << f.agent_log(0);
  EXPECT_EQ(count_of(f.agent_log(0), "welcomed by the coordinator"), 1) << "no reconnect: " << f.agent_log(0);
  EXPECT_TRUE(online(f, f.host_id(0)));
  EXPECT_EQ(metric(metrics(f), "gantry_hosts_lost_total"), 0);
}

TEST(UdpHeartbeat, ForgedReplayedAndMalformedDatagramsAreCountedAndDropped) {
  if (!have_python_zmq()) GTEST_SKIP() << "python3-zmq missing (scripts/install-deps installs it)";
  FleetOptions o;
  o.insecure = true;
  o.heartbeat_misses = 20;  // 4 s: the peer's 1.7 s of final silence must not expire it
  o.coordinator_extra_args = {"--coordinator-heartbeat-ms", "400"};
  Fleet f(1, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  const auto& ep = f.endpoints();

  // 5 s of datagrams and nothing on the connection, then 1.7 s of silence.
  auto r = run_peer({"udp-heartbeats", "--endpoint", ep.agent, "--host", "udp-peer", "--hold-s", "5", "--interval-ms",
                     "200", "--wait-ms", "1500"});
  ASSERT_TRUE(r.contains("confirms")) << r.dump() << f.diagnostics();
  // The first valid datagram (seq 1) is confirmed once; the forgeries before it were not.
  ASSERT_EQ(r["confirms"].size(), 1u) << r.dump();
  EXPECT_EQ(r["confirms"][0], 1) << r.dump();
  // Its silence at the end: told to heartbeat over the connection.
  EXPECT_EQ(r.value("lost", 0), 1) << r.dump();
  EXPECT_TRUE(r["errors"].empty()) << r.dump();
  // Once confirmed, the coordinator's own heartbeats came as datagrams of the session (checked
  // by the peer: magic GHC, the session, the MAC under the key, increasing sequence) and none
  // over the connection. 5 s at a 400 ms period: about a dozen.
  EXPECT_GE(r.value("coordinator_datagrams", 0), 3) << r.dump();
  EXPECT_EQ(r.value("coordinator_datagrams_bad", -1), 0) << r.dump();
  EXPECT_EQ(r.value("zmtp_heartbeats_after_confirm", -1), 0) << r.dump();

  const std::string m = metrics(f);
  for (const char* reason : {"size", "magic", "unknown_session", "mac", "replay"})
    EXPECT_EQ(metric(m, std::string("gantry_udp_heartbeats_rejected_total{reason=\"") + reason + "\"}"), 1)
        << reason << m;
  // Every valid datagram counted (the real agent's too, so at least the peer's).
  EXPECT_GE(metric(m, "gantry_udp_heartbeats_total"), r.value("sent", 0)) << m;
  // Five seconds on datagrams alone (the timeout is four): never lost.
  EXPECT_EQ(metric(m, "gantry_hosts_lost_total"), 0) << m;
  EXPECT_EQ(f.coordinator_log().find("udp-peer is unknown"), std::string::npos) << f.coordinator_log();
  EXPECT_NE(f.coordinator_log().find("heartbeat datagram dropped"), std::string::npos) << "a log line for the drops";
  EXPECT_TRUE(f.coordinator_running());
}

}  // namespace
}  // namespace gantry::testing
