#include "agent/core/epoch_gate.h"

namespace gantry::agent {

EpochVerdict check_epoch(uint64_t highest_seen, uint64_t epoch) {
  if (highest_seen == 0) return {true, epoch > 0};
  if (epoch < highest_seen) return {false, false};
  return {true, epoch > highest_seen};
}

std::string stale_epoch_message(uint64_t epoch, uint64_t highest_seen) {
  return "stale epoch " + std::to_string(epoch) + " < " + std::to_string(highest_seen);
}

}  // namespace gantry::agent
