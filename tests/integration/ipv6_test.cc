// IPv6 end to end: a secure fleet (CURVE, enrolled agent keys, signed releases) whose coordinator
// listens on ::1 only. Agents connect, subscribe and heartbeat by datagram over IPv6, a rollout
// goes through, and a rollback signal reaches them — the same paths as over 127.0.0.1.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/fleet.h"

namespace gantry::testing {
namespace {

TEST(Ipv6, ASecureFleetOnIpv6LoopbackRollsOutRollsBackAndHeartbeatsByDatagram) {
  FleetOptions o;
  o.ipv6 = true;
  Fleet f(2, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  const auto& ep = f.endpoints();
  for (const std::string& e : {ep.agent, ep.pub, ep.operator_}) EXPECT_EQ(e.rfind("tcp://[::1]:", 0), 0u) << e;
  // The UDP heartbeat socket is bound on the agent endpoint's address: ::1 too.
  auto j = nlohmann::json::parse(read_file(f.dir() + "/coordinator/endpoints.json"), nullptr, false);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("udp_heartbeat", "").rfind("[::1]:", 0), 0u) << j.dump();
  const char* confirmed = "the coordinator receives our heartbeat datagrams";
  ASSERT_TRUE(wait_until(
      [&] { return count_of(f.agent_log(0), confirmed) >= 1 && count_of(f.agent_log(1), confirmed) >= 1; }, 20000))
      << f.diagnostics();

  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();
  auto good = f.make_release("v2", "healthy");
  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v2", "--release", good, "--batches", "1,1", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v2") << "host " << i;

  // A bad release fails on its first host; the rollback signal (PUB over ::1) and the revert
  // leave every host on v2.
  auto bad = f.make_release("v3", "unhealthy");
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "v3", "--release", bad, "--batches", "1,1",
             "--max-failures", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v2") << "host " << i << f.diagnostics();
  EXPECT_TRUE(wait_until(
      [&] {
        return count_of(f.agent_log(0), "signal rollback for rollout") >= 1 &&
               count_of(f.agent_log(1), "signal rollback for rollout") >= 1;
      },
      10000))
      << f.diagnostics();
  auto hosts = hosts_json(f);
  int online = 0;
  for (const auto& h : hosts.value("hosts", nlohmann::json::array())) online += h.value("online", false) ? 1 : 0;
  EXPECT_EQ(online, 2) << hosts.dump(2);
}

}  // namespace
}  // namespace gantry::testing
