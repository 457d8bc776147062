// Issue 23: a randomized soak of three coordinators on a three-member etcd cluster (Debian's
// etcd, loopback) with five real agents. A seeded RNG (printed; GANTRY_SOAK_SEED=<n> replays a
// run) drives a bounded number of rounds, each one rollout (versions in turn, every third with
// a host that fails the new release, so the rollout rolls back) and, at a random moment of it,
// one fault:
//   - the leader SIGKILLed, then started again;
//   - one etcd member SIGKILLed, then started again;
//   - two etcd members stopped for a few seconds (quorum lost), then started again;
//   - the leader paused (SIGSTOP) for longer than its lease TTL, then resumed (SIGCONT): a
//     standby has led meanwhile, and the resumed one must exit (75) without acting.
// A coordinator that exits by itself is started again, as systemd's Restart=on-failure does; it
// must have exited with 75 (lost leadership). After each round the rollout must end (bounded)
// the way it would without faults. At the end, for every host: the version its demo service
// answers == the version `gantry hosts --json` records == the desired state; no order ran twice
// on any host; no host acted on an order over a connection to a coordinator older than one it
// had already heard from.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/fleet.h"
#include "tests/support/ha_checks.h"

using namespace gantry::testing;

namespace {

constexpr int kHosts = 5;
constexpr int kRounds = 8;
constexpr int kLeaseTtlS = 3;
// No new round starts after this much of the loop; each round's own waits are bounded too.
constexpr int kLoopCapMs = 110000;
constexpr int kRoundEndMs = 60000;

using Clock = std::chrono::steady_clock;
void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

FleetOptions soak_options(const std::string& store) {
  FleetOptions o;
  o.min_healthy_ms = 300;
  o.healthy_deadline_ms = 3000;
  o.probe_interval_ms = 100;
  o.heartbeat_interval_ms = 200;
  o.heartbeat_misses = 10;
  // Restored hosts stay online this long after a failover while their agents find the leader.
  o.restart_grace_ms = 10000;
  o.coordinators = 3;
  o.store = store;
  // With heartbeat datagrams an agent hears from its coordinator every --coordinator-heartbeat-ms
  // and leaves a silent one (a paused leader keeps its connections) after heartbeat_misses of
  // these (the default, 10 s, would make that 100 s).
  o.coordinator_extra_args = {"--lease-ttl", std::to_string(kLeaseTtlS), "--coordinator-heartbeat-ms", "1000"};
  o.coordinator_start_timeout_ms = 30000;
  return o;
}

// The CLI with 3 s per endpoint: a silent one (paused, or not serving yet) leaves time for the
// others (the CLI's default is 10 s each).
CmdResult cli(Fleet& f, std::vector<std::string> args, int timeout_ms = 15000) {
  args.insert(args.begin(), {"--timeout-ms", "3000"});
  return f.cli(args, timeout_ms);
}
nlohmann::json show(Fleet& f, uint64_t id) {
  return json_of(cli(f, {"--json", "rollout", "show", std::to_string(id)}));
}
nlohmann::json hosts(Fleet& f) { return json_of(cli(f, {"--json", "hosts"})); }
// The leader's /status (a standby answers `status` read-only, in another shape: no desired
// state, rollouts not a list).
nlohmann::json leader_status(Fleet& f) {
  const int k = f.leader(5000);
  return k < 0 ? nlohmann::json() : f.coordinator_status_at(k);
}
// The newest rollout of service demo, as the leader says; null when no leader answers.
nlohmann::json newest_rollout(Fleet& f) {
  const auto st = leader_status(f);
  if (!st.is_object() || !st.contains("rollouts") || !st["rollouts"].is_array()) return {};
  for (const auto& r : st["rollouts"])
    if (text_of(r, "service") == "demo") return r;
  return {};
}

// The coordinator other than `k` whose /status says it leads (k may be paused: it is not asked).
int leader_other_than(Fleet& f, int k, int timeout_ms) {
  int found = -1;
  wait_until(
      [&] {
        for (int j = 0; j < f.coordinator_count(); ++j) {
          if (j == k || !f.coordinator_running_at(j)) continue;
          if (text_of(f.coordinator_status_at(j), "role") == "leader") {
            found = j;
            return true;
          }
        }
        return false;
      },
      timeout_ms, 50);
  return found;
}

// Plays systemd: starts again every coordinator that exited by itself, and records how.
struct Supervisor {
  Fleet& f;
  std::vector<std::string>& trail;
  std::map<int, int> exits;  // exit status -> how many times
  int unexpected = 0;        // exits other than 75

  void tend() {
    for (int k = 0; k < f.coordinator_count(); ++k) {
      if (f.coordinator_running_at(k)) continue;
      const int status = f.kill_coordinator_at(k).value_or(-1);  // gone already: its status
      exits[status]++;
      if (status != 75) {
        ++unexpected;
        const std::string log = f.coordinator_log_at(k);
        ADD_FAILURE() << "c" << k + 1 << " exited with " << status << " (not 75, lost leadership)\n"
                      << log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
      }
      trail.push_back("  c" + std::to_string(k + 1) + " exited with " + std::to_string(status) + "; started again");
      f.start_coordinator_at(k);
    }
  }
};

TEST(HaSoak, KilledPausedAndPartitionedLeadersAndEtcdMembersEndWithTheRecordMatchingEveryHost) {
  uint64_t seed = 2326;
  if (const char* s = std::getenv("GANTRY_SOAK_SEED")) seed = std::strtoull(s, nullptr, 10);
  SCOPED_TRACE("soak seed " + std::to_string(seed) + " (rerun with GANTRY_SOAK_SEED=" + std::to_string(seed) + ")");
  std::cerr << "[ha-soak] seed " << seed << "\n";
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };

  EtcdCluster etcd(3);
  Fleet f(kHosts, soak_options(etcd.uri()));
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();

  // Every release uploaded once, before any fault.
  std::vector<std::string> versions;
  for (int r = 0; r < kRounds; ++r) {
    const std::string v = "v" + std::to_string(r + 2);
    auto up = f.cli({"release", "upload", f.make_release(v, "healthy"), "--service", "demo", "--version", v});
    ASSERT_EQ(up.exit_code, 0) << up.out << up.err << f.diagnostics();
    versions.push_back(v);
  }

  std::vector<std::string> trail;
  Supervisor sup{f, trail, {}, 0};
  auto trail_text = [&] {
    std::string t;
    for (const auto& s : trail) t += s + "\n";
    return t;
  };
  std::string desired = "v1";  // what the record should say once each round has ended
  uint64_t last_id = 0;
  int rounds_run = 0, rollbacks = 0;
  const auto loop_start = Clock::now();

  for (int round = 0; round < kRounds && ms_since(loop_start) < kLoopCapMs; ++round) {
    const std::string& v = versions[static_cast<size_t>(round)];
    const bool failing = round % 3 == 2;
    const int bad_host = pick(kHosts);
    if (failing) run({"touch", f.root(bad_host) + "/FAIL-" + v});
    std::string line =
        "round " + std::to_string(round) + ": " + v + (failing ? " (" + f.host_id(bad_host) + " fails it)" : "");

    // Start it (the CLI follows the leader; one that timed out may have started it anyway).
    uint64_t id = 0;
    for (int attempt = 0; attempt < 5 && id == 0; ++attempt) {
      sup.tend();
      f.leader(20000);
      auto r = cli(f, {"--json", "rollout",
                       "start",  "--service",
                       "demo",   "--version",
                       v,        "--batches",
                       "2",      "--batch-delay",
                       "500",    "--min-healthy-time",
                       "300",    "--healthy-deadline",
                       "3s",     "--max-failures",
                       "0",      "--unknown-hosts",
                       "wait",   "--unknown-wait",
                       "10m"},
                   20000);
      id = number_of(json_of(r), "id");
      if (id == 0) {
        const auto last = newest_rollout(f);
        if (text_of(last, "version") == v && number_of(last, "id") > last_id) id = number_of(last, "id");
      }
      if (id == 0) trail.push_back("  rollout start failed (" + std::to_string(r.exit_code) + "): " + r.out + r.err);
    }
    if (id == 0) {
      ADD_FAILURE() << "round " << round << ": rollout of " << v << " could not be started\n"
                    << trail_text() << f.diagnostics(4096);
      break;
    }
    last_id = id;

    // One fault, at a random moment of the rollout.
    sleep_ms(pick(2500));
    const int fault = pick(4);
    const int leader = f.leader(5000);
    switch (fault) {
      case 0: {
        if (leader < 0) {
          line += "; no leader to kill";
          break;
        }
        f.kill_coordinator_at(leader, SIGKILL);
        const int down = pick(1500);
        sleep_ms(down);
        f.start_coordinator_at(leader);
        line += "; leader c" + std::to_string(leader + 1) + " SIGKILLed, started " + std::to_string(down) + " ms later";
        break;
      }
      case 1: {
        const int m = pick(etcd.size());
        const int down = 1000 + pick(2000);
        etcd.kill(m);
        sleep_ms(down);
        etcd.start(m);
        line += "; etcd member " + std::to_string(m) + " SIGKILLed for " + std::to_string(down) + " ms";
        break;
      }
      case 2: {
        const int keep = pick(etcd.size());
        const int down = 3000 + pick(2000);
        const auto t0 = Clock::now();
        for (int m = 0; m < etcd.size(); ++m)
          if (m != keep) etcd.stop(m);
        sleep_ms(down);
        for (int m = 0; m < etcd.size(); ++m)
          if (m != keep) etcd.start(m);
        line += "; etcd quorum lost for " + std::to_string(down) + " ms (back healthy after " +
                std::to_string(ms_since(t0)) + " ms)";
        break;
      }
      default: {
        if (leader < 0) {
          line += "; no leader to pause";
          break;
        }
        const pid_t pid = f.coordinator_pid_at(leader);
        const int paused = kLeaseTtlS * 1000 + 1000 + pick(1500);
        ::kill(pid, SIGSTOP);
        sleep_ms(paused);
        const int during = leader_other_than(f, leader, 10000);
        ::kill(pid, SIGCONT);
        // Resumed, it finds its lease may have expired and stops without acting (exit 75, which
        // the supervisor checks when it starts it again).
        line += "; leader c" + std::to_string(leader + 1) + " paused " + std::to_string(paused) + " ms (c" +
                std::to_string(during + 1) + " led meanwhile)";
        const bool gone = wait_until([&] { return !f.coordinator_running_at(leader); }, 15000, 50);
        EXPECT_TRUE(gone) << "c" << leader + 1 << " still runs after its pause\n" << f.coordinator_log_at(leader);
        break;
      }
    }
    trail.push_back(line);
    sup.tend();

    // The rollout ends, the way it would without the fault.
    nlohmann::json ro;
    const bool ended = wait_until(
        [&] {
          sup.tend();
          auto x = show(f, id);
          if (!x.is_null()) ro = x;
          return is_terminal_phase(text_of(ro, "phase"));
        },
        kRoundEndMs, 200);
    const std::string phase = text_of(ro, "phase");
    trail.push_back("  rollout " + std::to_string(id) + " ended " + phase + " after " +
                    std::to_string(ms_since(loop_start)) + " ms of the loop");
    ++rounds_run;
    if (!ended) {
      ADD_FAILURE() << "round " << round << ": rollout " << id << " did not end within " << kRoundEndMs << " ms\n"
                    << ro.dump(2) << trail_text() << f.diagnostics(4096);
      break;
    }
    EXPECT_EQ(phase, failing ? "rolled_back" : "succeeded") << ro.dump(2) << trail_text();
    if (phase == "succeeded") desired = v;
    if (phase == "rolled_back") ++rollbacks;
    if (failing) run({"rm", "-f", f.root(bad_host) + "/FAIL-" + v});
  }
  std::cerr << "[ha-soak] " << rounds_run << " rounds (" << rollbacks << " rolled back) in " << ms_since(loop_start)
            << " ms:\n"
            << trail_text();

  // Settle: every etcd member and coordinator up, a leader, no rollout running.
  for (int m = 0; m < etcd.size(); ++m)
    if (!etcd.running(m)) etcd.start(m);
  sup.tend();
  ASSERT_GE(f.leader(30000), 0) << trail_text() << f.diagnostics(4096);
  ASSERT_TRUE(wait_until(
      [&] {
        sup.tend();
        const auto last = newest_rollout(f);
        return number_of(last, "id") >= last_id && is_terminal_phase(text_of(last, "phase"));
      },
      60000, 300))
      << newest_rollout(f).dump(2) << trail_text() << f.diagnostics(4096);

  // The record's desired state, every host's record and every host's answer agree.
  // (The leader's /status snapshot is rebuilt when read: polled until it shows the last end.)
  nlohmann::json st;
  auto desired_version = [&] {
    return st.contains("desired") && st["desired"].size() == 1u ? text_of(st["desired"][0], "version") : "";
  };
  EXPECT_TRUE(wait_until(
      [&] {
        st = leader_status(f);
        return desired_version() == desired;
      },
      15000, 200))
      << st.dump(2) << trail_text();
  const std::string want = desired_version();
  for (int i = 0; i < kHosts; ++i) {
    std::optional<std::string> served, recorded;
    const bool agree = wait_until(
        [&] {
          served = f.served_version(i);
          recorded = recorded_version(hosts(f), f.host_id(i));
          return served == want && recorded == want;
        },
        30000, 200);
    EXPECT_TRUE(agree) << f.host_id(i) << " serves " << served.value_or("(nothing)") << ", record says "
                       << recorded.value_or("(no answer)") << ", desired " << want << "\n"
                       << trail_text() << f.diagnostics(4096);
  }

  // No order ran twice; nothing acted on for a deposed leader.
  int refused = 0;
  for (int i = 0; i < kHosts; ++i) {
    const std::string log = f.agent_log(i);
    for (const auto& [order, n] : accepted_order_counts(log))
      EXPECT_EQ(n, 1) << f.host_id(i) << " ran order " << order << " " << n << " times\n" << trail_text();
    const auto t = read_epoch_timeline(log);
    EXPECT_TRUE(t.violations.empty()) << f.host_id(i) << ":\n"
                                      << ::testing::PrintToString(t.violations) << "\n"
                                      << trail_text();
    refused += t.refused_stale;
  }
  std::string exits;
  for (const auto& [status, n] : sup.exits) exits += " " + std::to_string(n) + "x" + std::to_string(status);
  std::cerr << "[ha-soak] coordinator exits restarted:" << (exits.empty() ? " none" : exits) << "; agents refused "
            << refused << " message(s) of a deposed coordinator\n";
}

}  // namespace
