// Liveness between the coordinator and its agents (PROTOCOL.md §5.2): agents heartbeat every
// interval; the coordinator heartbeats an agent only when it has sent it nothing for that agent's
// period: the interval for agents that do not announce capability bit 1 (older agents), and
// --coordinator-heartbeat-ms for agents that do, which then time the coordinator by that period.
// The older agent is played by the second implementation of the protocol (tests/support/peer.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/fleet.h"
#include "tests/support/peer.h"

namespace gantry::testing {
namespace {

TEST(Liveness, EachAgentIsHeartbeatedByThePeriodItCanTime) {
  if (!have_python_zmq()) GTEST_SKIP() << "python3-zmq missing (scripts/install-deps installs it)";
  FleetOptions o;
  o.insecure = true;
  o.heartbeat_interval_ms = 200;
  o.coordinator_extra_args = {"--coordinator-heartbeat-ms", "1500"};
  Fleet f(1, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  const auto& ep = f.endpoints();

  // Both peers heartbeat every 200 ms for 4 s, as the interval asks.
  auto older = run_peer(
      {"heartbeats", "--endpoint", ep.agent, "--host", "older-agent", "--hold-s", "4", "--interval-ms", "200"});
  ASSERT_TRUE(older["welcome"].is_object()) << older.dump();
  EXPECT_EQ(older["welcome"].value("heartbeat_interval_ms", 0), 200) << older.dump();
  EXPECT_EQ(older["welcome"].value("coordinator_heartbeat_ms", 0), 0)
      << "announced to an agent that cannot time it: " << older.dump();
  // Every 200 ms: about 20 in 4 s; far more than the newer agent's period allows.
  EXPECT_GE(older.value("heartbeats_received", 0), 8) << older.dump();

  auto newer = run_peer({"heartbeats", "--endpoint", ep.agent, "--host", "newer-agent", "--hold-s", "4",
                         "--interval-ms", "200", "--capabilities", "1"});
  ASSERT_TRUE(newer["welcome"].is_object()) << newer.dump();
  EXPECT_EQ(newer["welcome"].value("coordinator_heartbeat_ms", 0), 1500) << newer.dump();
  // Every 1500 ms, the first one up to 1300 ms early (hosts' heartbeats are spread over the
  // period): at most 3 in 4 s, but not none — against the older agent's ~20.
  EXPECT_GE(newer.value("heartbeats_received", 0), 1) << newer.dump();
  EXPECT_LE(newer.value("heartbeats_received", 0), 3) << newer.dump();

  // The real agent announced the capability, learned the period from its Welcome and has kept
  // its connection all along: with the interval (3 x 200 ms) as its limit it would have given
  // the coordinator up several times in these 8 s.
  const std::string log = f.agent_log(0);
  EXPECT_NE(log.find("coordinator heard from every 1500 ms"), std::string::npos) << log;
  EXPECT_EQ(log.find("no word from the coordinator"), std::string::npos) << log;
  // And the coordinator still counts the real agent as online.
  auto hosts = hosts_json(f);
  bool online = false;
  for (const auto& h : hosts.value("hosts", nlohmann::json::array()))
    if (h.value("host_id", "") == f.host_id(0)) online = h.value("online", false);
  EXPECT_TRUE(online) << hosts.dump(2);
}

}  // namespace
}  // namespace gantry::testing
