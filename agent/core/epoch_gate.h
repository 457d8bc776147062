// The fencing rule for coordinator epochs (PROTOCOL.md "Epochs"): a message stamped with an
// epoch below the highest this agent has seen comes from a deposed coordinator and is not acted
// on. Pure: the caller keeps the highest epoch (journaled in AgentState) and acts on the verdict.
#pragma once

#include <cstdint>
#include <string>

namespace gantry::agent {

struct EpochVerdict {
  bool accept = false;  // act on the message
  bool raise = false;   // accepted, and its epoch is the new highest: journal it before acting
};

// `epoch` of an incoming Welcome, Order or Signal against `highest_seen` (0: none seen yet).
//  - Nothing seen yet: everything is accepted (epoch 0 / absent: an older coordinator).
//  - Otherwise an epoch below the highest, 0 included, is refused; an equal one accepted; a
//    higher one accepted and raises the highest.
EpochVerdict check_epoch(uint64_t highest_seen, uint64_t epoch);

// "stale epoch N < M": the refusal's message (OrderAck.message, logs).
std::string stale_epoch_message(uint64_t epoch, uint64_t highest_seen);

}  // namespace gantry::agent
