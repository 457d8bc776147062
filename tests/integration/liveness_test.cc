// Liveness between the coordinator and its agents (PROTOCOL.md §5.2): agents heartbeat every
// interval; the coordinator heartbeats an agent only when it has sent it nothing for that agent's
// period: the interval for agents that do not announce capability bit 1 (older agents), and
// --coordinator-heartbeat-ms for agents that do, which then time the coordinator by that period.
// The older agent is played by the second implementation of the protocol (tests/support/peer.h).
// A host is silent only while the coordinator listens: a loop turn stalled in a store write does
// not make the hosts whose heartbeats wait in its sockets count as lost.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <regex>
#include <thread>

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

// Agents heartbeating every 200 ms, a host unknown after 600 ms of silence.
FleetOptions short_timeout() {
  FleetOptions o;
  o.heartbeat_interval_ms = 200;
  o.heartbeat_misses = 3;
  return o;
}

// A second (more than a timeout) later: no host became unknown, by the coordinator's log, its
// counter and its host list.
void expect_no_host_lost(Fleet& f) {
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  EXPECT_EQ(f.coordinator_log().find("is unknown: no traffic"), std::string::npos) << f.coordinator_log();
  const auto metrics = http_get(std::stoi(f.endpoints().http.substr(f.endpoints().http.rfind(':') + 1)), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->body.find("gantry_hosts_lost_total 0\n"), std::string::npos) << metrics->body;
  EXPECT_EQ(online_hosts(f), f.size()) << f.diagnostics();
}

// The coordinator's loop stalls in a store write for 5 heartbeat timeouts (its SQLite database
// write-locked by another process: a real lock, the busy wait SQLite itself does) while its
// agents go on heartbeating. Their heartbeats wait in its sockets; it reads them before it judges
// anyone: no host becomes unknown. (The same stall is an etcd store's write riding out an etcd
// election, HaEtcdOutage.LosingOneMemberOfThreeChangesNothing.)
TEST(Liveness, AHostIsNotLostWhileTheCoordinatorItselfIsNotListening) {
  Fleet f(3, short_timeout());
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  const std::string rel = f.make_release("v1", "healthy");

  // Another process takes the database's write lock for 3 s and says when it let go, on the
  // monotonic clock this process reads too (CLOCK_MONOTONIC).
  const std::string lock_log = f.dir() + "/locker.log";
  Process locker({"python3", "-c",
                  "import sqlite3, sys, time\n"
                  "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                  "c.execute('BEGIN IMMEDIATE')\n"
                  "print('locked', flush=True)\n"
                  "time.sleep(3)\n"
                  "c.execute('COMMIT')\n"
                  "print('released %d' % int(time.monotonic() * 1000), flush=True)\n",
                  f.state_dir() + "/coordinator.db"},
                 lock_log);
  ASSERT_TRUE(wait_until([&] { return read_file(lock_log).find("locked") != std::string::npos; }, 10000, 20))
      << read_file(lock_log);
  // An upload's last step writes the release's row: the loop waits for the lock there.
  auto r = f.cli({"release", "upload", rel, "--service", "demo", "--version", "v1"}, 30000);
  const auto returned =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  ASSERT_EQ(locker.wait_exit(10000).value_or(-1), 0) << read_file(lock_log);
  std::smatch m;
  const std::string said = read_file(lock_log);
  ASSERT_TRUE(std::regex_search(said, m, std::regex("released (\\d+)"))) << said;
  // The stall happened: the upload was answered only after the lock was let go, 3 s (five
  // heartbeat timeouts) after the loop met it.
  EXPECT_GE(returned, std::stoll(m[1].str())) << said;

  // No host went unknown, then or once the loop read what waited.
  expect_no_host_lost(f);
}

// The whole coordinator process stopped (SIGSTOP: a VM paused, a debugger) for 5 heartbeat
// timeouts and resumed: the heartbeats that waited in the kernel's buffers are read before
// anyone is judged, and no host becomes unknown.
TEST(Liveness, AHostIsNotLostWhileTheCoordinatorProcessIsStopped) {
  Fleet f(3, short_timeout());
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  ASSERT_EQ(::kill(f.coordinator_pid(), SIGSTOP), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  ASSERT_EQ(::kill(f.coordinator_pid(), SIGCONT), 0);
  expect_no_host_lost(f);
}

}  // namespace
}  // namespace gantry::testing
