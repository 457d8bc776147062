// What the host lifecycle needs from a load balancer in front of one service instance: stop
// sending it new work, send it work again, and say how it sees the instance.
#pragma once

#include <cstdint>
#include <string>

#include "common/util/expected.h"

namespace gantry::agent::traffic {

// One server as the load balancer reports it.
struct ServerStat {
  std::string status;     // HAProxy's words: "UP", "UP 1/2", "DOWN", "DOWN 1/2", "DRAIN", "MAINT", "no check", ...
  uint64_t sessions = 0;  // current sessions on the server (in-flight work)
  uint64_t queued = 0;    // requests queued for it
  // Receiving new traffic: UP (also while one check failed, "UP 1/2") or enabled without checks.
  bool up() const;
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;
  // Names the balancer and server, for logs and reports.
  virtual std::string describe() const = 0;
  // Stops sending new work to the server; work in flight continues.
  virtual Status drain() = 0;
  // Lets the server take new work again (the balancer's own health checks still decide UP).
  virtual Status ready() = 0;
  // The server's current state.
  virtual Expected<ServerStat> stat() = 0;
};

}  // namespace gantry::agent::traffic
