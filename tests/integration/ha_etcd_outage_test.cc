// Issue 23: what an etcd outage does to coordinators sharing it. Three coordinators on a real
// three-member etcd cluster (Debian's etcd, loopback), real agents.
//  - One member of three lost mid-rollout: nothing visible happens (same leader, same epoch,
//    the rollout ends as it would have).
//  - Quorum lost mid-rollout: the leader stops deciding (it exits once its lease may have
//    expired), no host is ordered anything while quorum is gone, every agent keeps serving its
//    release; when quorum returns a coordinator is elected and the rollout resumes to its end.
#include <gtest/gtest.h>

#include <csignal>
#include <map>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/fleet.h"
#include "tests/support/ha_checks.h"
#include "tests/support/ha_fleet.h"

using namespace gantry::testing;

namespace {

int accepted_count(Fleet& f) {
  int n = 0;
  for (int i = 0; i < f.size(); ++i)
    for (const auto& [order, times] : accepted_order_counts(f.agent_log(i))) n += times;
  return n;
}

// Coordinator k's epoch from its /status, asked until it answers (bounded): its HTTP answer can
// wait for a status snapshot while its loop is in a store write riding out etcd's election.
uint64_t epoch_of(Fleet& f, int k) {
  uint64_t epoch = 0;
  wait_until(
      [&] {
        epoch = number_of(f.coordinator_status_at(k), "epoch");
        return epoch > 0;
      },
      15000, 200);
  return epoch;
}

uint64_t start_slow_rollout(Fleet& f, const std::string& version) {
  const auto rel = f.make_release(version, "healthy");
  auto r = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", version, "--release", rel,
                  "--batches", "1", "--batch-delay", "1500", "--min-healthy-time", "300"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  return json_of(r).value("id", 0ULL);
}

bool batch_done(const nlohmann::json& ro, int n) {
  return ro.contains("counts") && ro["counts"].value("healthy", 0) >= n;
}

}  // namespace

TEST(HaEtcdOutage, LosingOneMemberOfThreeChangesNothing) {
  EtcdCluster etcd(3);
  // The default lease TTL: losing etcd's raft leader takes etcd an election and the client a try
  // at the next member, ~2-3 s without a keepalive answered, and a leader gives up TTL - 1 s
  // after its last answered one (docs/HIGH_AVAILABILITY.md).
  Fleet f(4, ha_fleet_options(etcd.uri(), 5, 10));
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();
  const int leader = f.leader();
  ASSERT_GE(leader, 0);
  const uint64_t epoch = epoch_of(f, leader);
  ASSERT_GT(epoch, 0u) << f.diagnostics();

  const uint64_t id = start_slow_rollout(f, "v2");
  ASSERT_GT(id, 0u);
  ASSERT_TRUE(wait_until([&] { return batch_done(rollout_get(f, id), 1); }, 30000, 100)) << f.diagnostics();
  // etcd's raft leader: its loss costs etcd an election, the hardest single loss.
  const int raft = etcd.raft_leader();
  ASSERT_GE(raft, 0) << etcd.diagnostics();
  etcd.kill(raft);
  auto ro = wait_rollout_end(f, id, 60000);
  EXPECT_EQ(ro.value("phase", ""), "succeeded") << ro.dump(2) << f.diagnostics();
  EXPECT_EQ(f.leader(5000), leader) << f.diagnostics();
  EXPECT_EQ(epoch_of(f, leader), epoch);
  for (int k = 0; k < f.coordinator_count(); ++k) EXPECT_TRUE(f.coordinator_running_at(k)) << "c" << k + 1;
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v2") << f.host_id(i);
}

TEST(HaEtcdOutage, QuorumLostStopsDecisionsAgentsKeepServingAndTheRolloutResumes) {
  EtcdCluster etcd(3);
  // The default lease TTL: losing etcd's raft leader takes etcd an election and the client a try
  // at the next member, ~2-3 s without a keepalive answered, and a leader gives up TTL - 1 s
  // after its last answered one (docs/HIGH_AVAILABILITY.md).
  Fleet f(4, ha_fleet_options(etcd.uri(), 5, 10));
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();
  const uint64_t id = start_slow_rollout(f, "v2");
  ASSERT_GT(id, 0u);
  ASSERT_TRUE(wait_until([&] { return batch_done(rollout_get(f, id), 1); }, 30000, 100)) << f.diagnostics();
  const int leader = f.leader();
  ASSERT_GE(leader, 0);

  etcd.kill(1);
  etcd.kill(2);
  // The leader stops: it exits once its lease may have expired (TTL 3 s), with the code that
  // makes systemd start it again as a standby.
  ASSERT_TRUE(wait_until([&] { return !f.coordinator_running_at(leader); }, 15000, 50)) << f.diagnostics();
  const std::optional<int> exited = f.kill_coordinator_at(leader, SIGKILL);  // its status; it is gone
  EXPECT_EQ(exited.value_or(-1), 75) << f.coordinator_log_at(leader);
  // Nothing is decided while quorum is gone: no host accepts an order, and nobody leads.
  const int accepted = accepted_count(f);
  std::this_thread::sleep_for(std::chrono::seconds(6));  // two lease TTLs: the span observed
  EXPECT_EQ(accepted_count(f), accepted) << f.diagnostics();
  EXPECT_EQ(f.leader(200), -1);
  // Agents keep serving their release meanwhile.
  int serving = 0;
  for (int i = 0; i < f.size(); ++i) serving += f.served_version(i).has_value() ? 1 : 0;
  EXPECT_EQ(serving, f.size()) << f.diagnostics();

  // Quorum back (and the stopped coordinator restarted, as systemd would): the rollout resumes.
  etcd.start(1);
  etcd.start(2);
  f.start_coordinator_at(leader);
  ASSERT_GE(f.leader(30000), 0) << f.diagnostics();
  auto ro = wait_rollout_end(f, id, 90000);
  EXPECT_EQ(ro.value("phase", ""), "succeeded") << ro.dump(2) << f.diagnostics();
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v2") << f.host_id(i);
}
