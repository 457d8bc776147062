// Rollouts the agent heard an abort or rollback signal for, in memory (the newest kMax): their
// later update orders are refused at intake (a restarted agent forgets them; the coordinator does
// not send orders of a stopped rollout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

namespace gantry::agent {

class StoppedRollouts {
 public:
  // Remembers that `rollout_id` of `service` was stopped by a `kind` signal; a rollout already
  // remembered keeps its first kind.
  void remember(uint64_t rollout_id, const std::string& service, const std::string& kind);
  // The kind of the signal that stopped `rollout_id` of `service`, or nullptr.
  const std::string* stopped_by(uint64_t rollout_id, const std::string& service) const;

 private:
  struct Stopped {
    uint64_t rollout_id;
    std::string service;
    std::string kind;
  };
  static constexpr size_t kMax = 64;
  std::deque<Stopped> stopped_;  // newest last
};

}  // namespace gantry::agent
