// Failover time between coordinators on etcd (bench/run failover, docs/BENCHMARKS.md 8b), with
// the integration tests' harness: a fresh three-member etcd cluster (Debian's etcd, loopback),
// three coordinators and four real agents per run. A rollout of one host per batch runs; when
// batch 2's order is out (the host ordered, not yet healthy) the leader is SIGKILLed. Measured
// from the kill: until another coordinator's /status says it leads (polled every 20 ms), and
// until the new leader orders batch 3 (the first event of its "batch 3" in the event log, whose
// time is the coordinator's own wall clock; the kill time is this process's wall clock, same
// machine). One JSON line per run on stdout.
#include <chrono>
#include <csignal>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/fleet.h"
#include "tests/support/ha_checks.h"
#include "tests/support/ha_fleet.h"

using namespace gantry::testing;

namespace {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The time of the first event that mentions "batch N" and says it started or ordered.
int64_t batch_ordered_at(const nlohmann::json& ro, int n) {
  const std::string needle = "batch " + std::to_string(n);
  if (!ro.contains("events")) return 0;
  for (const auto& e : ro["events"]) {
    const std::string m = e.value("message", "");
    if (m.find(needle) != std::string::npos &&
        (m.find("order") != std::string::npos || m.find("start") != std::string::npos))
      return e.value("at", int64_t{0});
  }
  return 0;
}

bool one_run(int ttl, nlohmann::json* out) {
  EtcdCluster etcd(3);
  FleetOptions o = ha_fleet_options(etcd.uri(), ttl, 10);
  o.min_healthy_ms = 1500;  // batch 2's host is still verifying when the leader is killed
  o.healthy_deadline_ms = 10000;
  o.coordinator_start_timeout_ms = 30000;
  Fleet f(4, o);
  if (!start_fleet(f)) {
    std::cerr << "fleet did not start\n" << f.diagnostics();
    return false;
  }
  std::string why;
  if (!install_everywhere(f, "v1", &why)) {
    std::cerr << "v1 not installed: " << why << f.diagnostics();
    return false;
  }
  const auto rel = f.make_release("v2", "healthy");
  auto r = f.cli({"--json", "rollout", "start", "--service", "demo", "--version", "v2", "--release", rel, "--batches",
                  "1", "--min-healthy-time", "1500"});
  const uint64_t id = json_of(r).value("id", 0ULL);
  if (id == 0) {
    std::cerr << "rollout not started: " << r.out << r.err;
    return false;
  }
  if (!wait_until(
          [&] {
            return host_state(rollout_get(f, id), f.host_id(1)) == "ordered" ||
                   host_state(rollout_get(f, id), f.host_id(1)) == "verifying";
          },
          60000, 20)) {
    std::cerr << "batch 2 never in flight\n" << f.diagnostics();
    return false;
  }
  const int old = f.leader(2000);
  const int64_t killed = wall_ms();
  const auto t0 = std::chrono::steady_clock::now();
  f.kill_coordinator_at(old, SIGKILL);
  int now = -1;
  wait_until(
      [&] {
        for (int k = 0; k < f.coordinator_count(); ++k) {
          if (k == old) continue;
          if (text_of(f.coordinator_status_at(k), "role") == "leader") {
            now = k;
            return true;
          }
        }
        return false;
      },
      60000, 20);
  const auto elected =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json ro;
  int64_t ordered = 0;
  wait_until(
      [&] {
        ro = rollout_get(f, id);
        ordered = batch_ordered_at(ro, 3);
        return ordered > 0;
      },
      60000, 50);
  if (now < 0 || ordered == 0) {
    std::cerr << "no new leader or no batch 3\n" << ro.dump(2) << f.diagnostics();
    return false;
  }
  *out = {{"elected_ms", elected}, {"next_batch_ms", ordered - killed}, {"old", old + 1}, {"new", now + 1}};
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5, ttl = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--runs") runs = std::stoi(argv[i + 1]);
    if (a == "--lease-ttl") ttl = std::stoi(argv[i + 1]);
  }
  int ok = 0;
  for (int i = 0; i < runs && i < 50; ++i) {
    nlohmann::json j;
    try {
      if (one_run(ttl, &j)) {
        std::cout << j.dump() << std::endl;
        ++ok;
      }
    } catch (const std::exception& e) {
      std::cerr << "run " << i + 1 << " failed: " << e.what() << "\n";
    }
  }
  return ok == runs ? 0 : 1;
}
