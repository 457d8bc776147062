// Randomized soak: a fixed-seed sequence of operator commands and faults (start, pause,
// resume, promote, a new release mid-rollout, rollback, abort, agent SIGKILL, coordinator
// SIGKILL, agent partition by SIGSTOP/SIGCONT) in a bounded loop. Afterwards, once everything
// has settled, every host runs (by its own answer) the release the coordinator's record says it
// runs, on one complete release on disk. GANTRY_SOAK_SEED=<n> replays a run; the seed is printed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "tests/support/durability.h"
#include "tests/support/fleet.h"

using namespace gantry::testing;

namespace {

constexpr int kHosts = 4;
constexpr int kOps = 24;

TEST(Soak, RandomOperationsEndWithTheRecordMatchingEveryHost) {
  uint64_t seed = 20240611;
  if (const char* s = std::getenv("GANTRY_SOAK_SEED")) seed = std::strtoull(s, nullptr, 10);
  SCOPED_TRACE("soak seed " + std::to_string(seed) + " (rerun with GANTRY_SOAK_SEED=" + std::to_string(seed) + ")");
  std::cerr << "[soak] seed " << seed << "\n";
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };

  FleetOptions o;
  o.min_healthy_ms = 200;
  o.healthy_deadline_ms = 2000;
  o.heartbeat_interval_ms = 200;
  o.heartbeat_misses = 3;
  o.insecure = kInsecure;
  Fleet f(kHosts, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();

  // Releases uploaded once; v4 fails verification everywhere.
  const std::vector<std::pair<std::string, std::string>> releases = {
      {"v2", "healthy"}, {"v3", "healthy"}, {"v4", "unhealthy"}, {"v5", "slow-start"}};
  for (const auto& [v, b] : releases) {
    auto r = f.cli({"release", "upload", f.make_release(v, b), "--service", "demo", "--version", v});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  std::vector<bool> stopped(kHosts, false);
  std::vector<std::string> trail;
  auto start_rollout = [&]() {
    const auto& rel = releases[static_cast<size_t>(pick(static_cast<int>(releases.size())))];
    std::vector<std::string> args = {"rollout",
                                     "start",
                                     "--service",
                                     "demo",
                                     "--version",
                                     rel.first,
                                     "--batches",
                                     pick(2) ? "1" : "2",
                                     "--max-failures",
                                     "1",
                                     "--unknown-hosts",
                                     pick(2) ? "wait" : "fail",
                                     "--unknown-wait",
                                     "3s",
                                     "--min-healthy-time",
                                     "200",
                                     "--healthy-deadline",
                                     "2s",
                                     "--host-timeout",
                                     "30s"};
    if (pick(3) == 0) args.insert(args.end(), {"--pause-after", "0"});
    if (pick(4) == 0) args.push_back("--no-auto-rollback");
    return f.cli(args, 20000);
  };

  for (int op = 0; op < kOps; ++op) {
    const int what = pick(11);
    std::string desc;
    CmdResult r;
    switch (what) {
      case 0:
      case 1:
        r = start_rollout();
        desc = "start";
        break;
      case 2:
        r = f.cli({"rollout", "pause", "--service", "demo"});
        desc = "pause";
        break;
      case 3:
        r = f.cli({"rollout", pick(2) ? "resume" : "promote", "--service", "demo"});
        desc = "resume/promote";
        break;
      case 4:  // a new release mid-rollout: abort what runs, start another
        f.cli({"rollout", "abort", "--service", "demo"});
        r = start_rollout();
        desc = "new release mid-rollout";
        break;
      case 5:
        r = f.cli({"rollback", "--service", "demo"});
        desc = "rollback";
        break;
      case 6: {
        const int i = pick(kHosts);
        if (stopped[i]) {
          if (f.agent_pid(i) > 0) ::kill(f.agent_pid(i), SIGCONT);
          stopped[i] = false;
        }
        f.restart_agent(i);
        desc = "SIGKILL+restart agent " + f.host_id(i);
        break;
      }
      case 7:
        f.restart_coordinator();
        desc = "SIGKILL+restart coordinator";
        break;
      case 8: {
        const int i = pick(kHosts);
        if (f.agent_running(i) && f.agent_pid(i) > 0) {
          ::kill(f.agent_pid(i), stopped[i] ? SIGCONT : SIGSTOP);
          stopped[i] = !stopped[i];
        }
        desc = std::string(stopped[i] ? "partition (SIGSTOP) " : "heal (SIGCONT) ") + f.host_id(i);
        break;
      }
      case 9:
        r = f.cli({"rollout", "abort", "--service", "demo"});
        desc = "abort";
        break;
      default:
        desc = "wait";
        break;
    }
    trail.push_back(std::to_string(op) + ": " + desc +
                    (r.exit_code >= 0 ? " -> exit " + std::to_string(r.exit_code) : ""));
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + pick(900)));
  }
  const std::string trail_text = [&] {
    std::string t;
    for (const auto& s : trail) t += s + "\n";
    return t;
  }();
  std::cerr << "[soak] operations:\n" << trail_text;

  // Settle: every agent running and reachable, no rollout active.
  for (int i = 0; i < kHosts; ++i) {
    if (stopped[i] && f.agent_pid(i) > 0) ::kill(f.agent_pid(i), SIGCONT);
    if (!f.agent_running(i)) f.start_agent(i);
  }
  if (!f.coordinator_running()) f.start_coordinator();
  ASSERT_TRUE(wait_until([&] { return online_hosts(f) == kHosts; }, 30000, 200)) << trail_text << f.diagnostics();
  nlohmann::json ro;
  ASSERT_TRUE(wait_until(
      [&] {
        ro = last_rollout(f);
        const std::string phase = ro.value("phase", "");
        if (phase == "paused")
          f.cli({"rollout", ro.value("waiting_promote", false) ? "promote" : "resume", "--service", "demo"});
        return ro.is_null() || is_terminal_phase(phase);
      },
      120000, 300))
      << ro.dump(2) << trail_text << f.diagnostics();

  // Every host: one complete release on disk, serving it, and the record says that one.
  for (int i = 0; i < kHosts; ++i) {
    std::optional<std::string> served, recorded;
    const bool agree = wait_until(
        [&] {
          served = f.served_version(i);
          recorded = recorded_version(hosts_json(f), f.host_id(i));
          return served.has_value() && served == recorded;
        },
        30000, 200);
    EXPECT_TRUE(agree) << f.host_id(i) << " serves " << served.value_or("(nothing)") << ", record says "
                       << recorded.value_or("(no answer)") << "\n"
                       << trail_text << f.diagnostics(4096);
    auto root = inspect_root(f.root(i));
    EXPECT_TRUE(root.problems.empty()) << f.host_id(i) << ": " << ::testing::PrintToString(root.problems);
    if (served) {
      EXPECT_EQ(root.current, *served) << f.host_id(i);
    }
  }
}

}  // namespace
