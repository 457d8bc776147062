// Issue 23: standby coordinators on etcd. Three coordinators share a real three-member etcd
// cluster (Debian's etcd, on loopback); real agents follow the leader by themselves. The leader
// is SIGKILLed at several points of a rollout of a failing release (between batches, with orders
// in flight, during the automatic rollback): a standby takes over and carries the rollout to
// the same end an uninterrupted run reaches (the same per-host states as the single-coordinator
// durability test), no order runs twice on any host, and the event log has every step.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/fleet.h"
#include "tests/support/ha_checks.h"
#include "tests/support/ha_fleet.h"

using namespace gantry::testing;

namespace {

// Kills the leader once `cond` holds of the rollout, and returns how long (ms) it took until
// another coordinator said it leads. The killed one is started again (as a standby).
int64_t kill_leader_when(Fleet& f, uint64_t id, const char* what,
                         const std::function<bool(const nlohmann::json&)>& cond) {
  nlohmann::json seen;
  const bool ok = wait_until(
      [&] {
        seen = rollout_get(f, id);
        return cond(seen);
      },
      60000, 50);
  EXPECT_TRUE(ok) << "never saw: " << what << "\n" << seen.dump(2) << f.diagnostics();
  const int old = f.leader(5000);
  EXPECT_GE(old, 0) << f.diagnostics();
  if (old < 0) return -1;
  const auto t0 = std::chrono::steady_clock::now();
  f.kill_coordinator_at(old, SIGKILL);
  int now = -1;
  wait_until(
      [&] {
        now = f.leader(200);
        return now >= 0 && now != old;
      },
      30000, 20);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << "[ha] leader c" << old + 1 << " SIGKILLed " << what << "; c" << now + 1 << " leads " << ms
            << " ms later\n";
  EXPECT_GE(now, 0) << "no standby took over\n" << f.diagnostics();
  f.start_coordinator_at(old);
  return ms;
}

}  // namespace

// The durability test's failing rollout (coordinator_durability_test.cc), with the leader killed
// three times instead of one coordinator restarted: host-4 and host-7 fail v2; budget 1,
// batches of 2, rollback one at a time.
TEST(HaFailover, LeaderKilledMidRolloutAndMidRollbackReachesTheSameEnd) {
  EtcdCluster etcd(3);
  Fleet f(10, ha_fleet_options(etcd.uri(), 3));
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();
  for (int i : {3, 6}) run({"touch", f.root(i) + "/FAIL-v2"});

  const auto rel = f.make_release("v2", "healthy");
  auto r = start_durability_rollout(f, rel);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  const uint64_t id = json_of(r).value("id", 0ULL);
  ASSERT_GT(id, 0u);

  kill_leader_when(f, id, "between batches 1 and 2", [](const nlohmann::json& ro) {
    return events_text(ro).find("before batch 2") != std::string::npos && ro["counts"].value("ordered", 0) == 0;
  });
  kill_leader_when(f, id, "with batch 3 in flight", [&](const nlohmann::json& ro) {
    return host_state(ro, "host-4") == "ordered" || host_state(ro, "host-5") == "ordered";
  });
  kill_leader_when(f, id, "during the automatic rollback", [](const nlohmann::json& ro) {
    return ro.value("phase", "") == "rolling_back" && ro["counts"].value("rolling_back", 0) > 0 &&
           ro["counts"].value("rolled_back", 0) >= 1;
  });

  auto ro = wait_rollout_end(f, id, 120000);
  ASSERT_EQ(ro.value("phase", ""), "rolled_back") << ro.dump(2) << f.diagnostics();
  const std::map<std::string, std::string> expect = {
      {"host-1", "rolled_back"}, {"host-2", "rolled_back"}, {"host-3", "rolled_back"}, {"host-4", "failed"},
      {"host-5", "rolled_back"}, {"host-6", "rolled_back"}, {"host-7", "failed"},      {"host-8", "skipped"},
      {"host-9", "skipped"},     {"host-10", "rolled_back"}};
  for (const auto& [h, st] : expect) EXPECT_EQ(host_state(ro, h), st) << h << "\n" << ro.dump(2);

  // Every host serves v1, and the record says so.
  nlohmann::json hosts;
  EXPECT_TRUE(wait_until(
      [&] {
        hosts = hosts_json(f);
        for (int i = 0; i < f.size(); ++i)
          if (recorded_version(hosts, f.host_id(i)) != "v1" || f.served_version(i) != "v1") return false;
        return true;
      },
      30000, 200))
      << hosts.dump(2) << f.diagnostics();

  // No order ran twice on any host: each order id accepted at most once by its agent.
  for (int i = 0; i < f.size(); ++i)
    for (const auto& [order, n] : accepted_order_counts(f.agent_log(i)))
      EXPECT_EQ(n, 1) << f.host_id(i) << " ran " << order;

  // The event log has every step, in order, with no gap: ids strictly increase, and the
  // landmarks of the uninterrupted run are all there.
  const std::string text = events_text(ro);
  int64_t last = 0;
  for (const auto& e : ro["events"]) {
    const int64_t eid = e.value("id", int64_t{0});
    EXPECT_GT(eid, last) << ro["events"].dump(2);
    last = eid;
  }
  for (const char* landmark : {"before batch 2", "rolling back"})
    EXPECT_NE(text.find(landmark), std::string::npos) << landmark << "\n" << text;
}
