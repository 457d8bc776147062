// The fleet the HA tests (issue 23) and the failover benchmark run: three coordinators on one
// etcd store, fast agent timings, and the restart grace a new leader gives the hosts it restores
// while they find it. Header-only.
#pragma once

#include <string>

#include "tests/support/fleet.h"

namespace gantry::testing {

inline FleetOptions ha_fleet_options(const std::string& store, int lease_ttl_s, int heartbeat_misses = 5) {
  FleetOptions o;
  o.min_healthy_ms = 300;
  o.healthy_deadline_ms = 3000;
  o.probe_interval_ms = 100;
  o.heartbeat_interval_ms = 200;
  o.heartbeat_misses = heartbeat_misses;
  o.coordinators = 3;
  o.store = store;
  o.coordinator_extra_args = {"--lease-ttl", std::to_string(lease_ttl_s)};
  o.coordinator_start_timeout_ms = 20000;
  // A new leader counts the recorded hosts as reachable this long while they find it (the
  // default outside tests is 30 s).
  o.restart_grace_ms = 10000;
  return o;
}

}  // namespace gantry::testing
