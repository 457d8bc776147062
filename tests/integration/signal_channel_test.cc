// Issue 21: each agent reports in its heartbeat whether its signal channel (its SUB on the
// coordinator's PUB) is up, and `gantry hosts`, `gantry --json hosts`, HTTP /status and
// /metrics show it. Real coordinator and agents on loopback, CURVE on.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>

#include "tests/support/fleet.h"

using gantry::testing::bin_dir;
using gantry::testing::Fleet;
using gantry::testing::FleetOptions;
using gantry::testing::json_of;
using gantry::testing::Process;
using gantry::testing::read_file;
using gantry::testing::wait_until;
using json = nlohmann::json;

namespace {

// host id -> signal_channel, from `gantry --json hosts` (online hosts only).
std::map<std::string, std::string> channels(Fleet& f) {
  std::map<std::string, std::string> out;
  const json j = json_of(f.cli({"--json", "hosts"}, 20000));
  if (!j.contains("hosts")) return out;
  for (const auto& h : j["hosts"])
    if (h.value("online", false)) out[h.value("host_id", "")] = h.value("signal_channel", "(absent)");
  return out;
}

int http_port(Fleet& f) {
  const std::string& a = f.endpoints().http;
  return std::stoi(a.substr(a.rfind(':') + 1));
}

// The value of gantry_hosts_signal_channel{state="<state>"} in /metrics, -1 when absent.
long gauge(Fleet& f, const std::string& state) {
  auto r = gantry::testing::http_get(http_port(f), "/metrics", 5000);
  if (!r || r->status != 200) return -1;
  std::smatch m;
  const std::regex re("\ngantry_hosts_signal_channel\\{state=\"" + state + "\"\\} ([0-9]+)\n");
  return std::regex_search(r->body, m, re) ? std::stol(m[1]) : -1;
}

// host id -> signal_channel from HTTP /status.
std::map<std::string, std::string> status_channels(Fleet& f) {
  std::map<std::string, std::string> out;
  auto r = gantry::testing::http_get(http_port(f), "/status", 5000);
  if (!r || r->status != 200) return out;
  json j;
  try {
    j = json::parse(r->body);
  } catch (const std::exception&) {
    return out;
  }
  for (const auto& h : j["hosts"]) out[h.value("host_id", "")] = h.value("signal_channel", "(absent)");
  return out;
}

std::string dump(const std::map<std::string, std::string>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += k + "=" + v + " ";
  return s;
}

}  // namespace

// Both agents' SUBs are up, in every view; after a coordinator restart (every connection
// dropped, a coordinator that never heard their state) they report up again on their own.
TEST(SignalChannel, UpInHostsStatusAndMetricsAndUpAgainAfterACoordinatorRestart) {
  Fleet f(2);
  f.start_coordinator();
  f.start_all_agents();
  std::map<std::string, std::string> seen;
  const std::map<std::string, std::string> both_up{{"host-1", "up"}, {"host-2", "up"}};
  ASSERT_TRUE(wait_until(
      [&] {
        seen = channels(f);
        return seen == both_up;
      },
      60000, 100))
      << dump(seen) << f.diagnostics();
  auto table = f.cli({"hosts"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("SIGNALS"), std::string::npos) << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex("host-1 +online +up "))) << table.out;
  EXPECT_TRUE(
      wait_until([&] { return gauge(f, "up") == 2 && gauge(f, "down") == 0 && gauge(f, "unknown") == 0; }, 20000, 100))
      << "up " << gauge(f, "up") << " down " << gauge(f, "down") << " unknown " << gauge(f, "unknown");
  EXPECT_TRUE(wait_until([&] { return status_channels(f) == both_up; }, 20000, 100)) << dump(status_channels(f));

  f.restart_coordinator();
  ASSERT_TRUE(wait_until(
      [&] {
        seen = channels(f);
        return seen == both_up;
      },
      60000, 100))
      << dump(seen) << f.diagnostics();
  EXPECT_TRUE(wait_until([&] { return gauge(f, "up") == 2; }, 20000, 100)) << gauge(f, "up");
  // The agents saw their SUB drop with the old coordinator and come back with the new one.
  for (int i = 0; i < 2; ++i)
    EXPECT_NE(f.agent_log(i).find("the broadcast subscription dropped"), std::string::npos) << f.agent_log(i);
}

// An agent whose SUB cannot reach the PUB (a firewall in the way; here its pub endpoint is a
// port nobody listens on) is online and shows its signal channel down; the other is up.
TEST(SignalChannel, AnAgentWhoseSubCannotConnectShowsDown) {
  Fleet f(2);
  f.start_coordinator();
  f.start_agent(0);
  // Agent 2 runs the config the fleet writes, with coordinator_pub moved to a closed port.
  const std::string conf = f.write_agent_config(1);
  std::string text = read_file(conf);
  const std::string pub_line = "coordinator_pub = " + f.endpoints().pub + "\n";
  const auto at = text.find(pub_line);
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, pub_line.size(),
               "coordinator_pub = tcp://127.0.0.1:" + std::to_string(gantry::testing::free_tcp_port()) + "\n");
  {
    std::ofstream out(conf, std::ios::trunc);
    out << text;
  }
  Process blocked({bin_dir() + "/agent/gantry-agent", "--config", conf}, f.agent_dir(1) + "/agent.log");

  std::map<std::string, std::string> seen;
  const std::map<std::string, std::string> want{{"host-1", "up"}, {"host-2", "down"}};
  ASSERT_TRUE(wait_until(
      [&] {
        seen = channels(f);
        return seen == want;
      },
      60000, 100))
      << dump(seen) << f.diagnostics();
  EXPECT_TRUE(wait_until([&] { return gauge(f, "up") == 1 && gauge(f, "down") == 1; }, 20000, 100))
      << "up " << gauge(f, "up") << " down " << gauge(f, "down");
  auto table = f.cli({"hosts"});
  EXPECT_TRUE(std::regex_search(table.out, std::regex("host-2 +online +down "))) << table.out;
  blocked.kill_and_reap();
}

// An agent enrolled the documented way (pending, then `gantry keys accept`) had its SUB refused
// while pending; welcomed, it reopens it and reports it up.
TEST(SignalChannel, AnAgentAcceptedWhilePendingReportsItsSubUp) {
  FleetOptions o;
  o.enroll_agents = false;
  Fleet f(1, o);
  f.start_coordinator();
  f.start_agent(0);
  ASSERT_TRUE(
      wait_until([&] { return f.agent_log(0).find("refused the broadcast subscription") != std::string::npos; }, 30000))
      << f.agent_log(0);
  const std::string key = [&] {
    std::string k = read_file(f.agent_key_prefix(0) + ".pub");
    while (!k.empty() && (k.back() == '\n' || k.back() == ' ')) k.pop_back();
    return k;
  }();
  ASSERT_EQ(f.cli({"keys", "accept", key, "--host", "host-1"}).exit_code, 0) << f.diagnostics();
  std::map<std::string, std::string> seen;
  ASSERT_TRUE(wait_until(
      [&] {
        seen = channels(f);
        return seen == std::map<std::string, std::string>{{"host-1", "up"}};
      },
      60000, 100))
      << dump(seen) << f.diagnostics();
}
