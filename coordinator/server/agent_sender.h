// Everything the coordinator sends to agents: messages to one connection (by routing id),
// orders to a greeted host, the rate-limited hello_required, and signals on the broadcast PUB.
#pragma once

#include <string>
#include <unordered_map>

#include <zmq.hpp>

#include "common/protocol/messages.h"
#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/metrics.h"
#include "coordinator/server/rollout_executor.h"

namespace gantry::coordinator {

// Messages to one agent connection, by its routing id.
class AgentLink {
 public:
  virtual ~AgentLink() = default;
  // Sends `m`; a failure (the peer is gone) is logged at debug: resends and heartbeats recover.
  virtual void send(const std::string& identity, const proto::Message& m) = 0;
  // Sends a frame built in place (a Chunk whose bytes were read straight into it).
  virtual Status send_frame(const std::string& identity, zmq::message_t&& frame) = 0;
};

class AgentSender final : public AgentLink, public OrderSink {
 public:
  // `epoch`: this coordinator's, stamped on every order at send time (PROTOCOL.md "Epochs").
  AgentSender(zmq::socket_t& agents, fleet::Registry& registry, Metrics& metrics, const Clock& clock,
              Millis heartbeat_interval_ms, uint64_t epoch);

  void send(const std::string& identity, const proto::Message& m) override;
  Status send_frame(const std::string& identity, zmq::message_t&& frame) override;
  // Already-encoded bytes (one heartbeat encoded once per tick for every host).
  Status send_raw(const std::string& identity, const std::string& bytes);
  // Only over a greeted connection: after a coordinator restart the hello comes first. The
  // order goes out stamped with this coordinator's epoch (the stored order has none).
  bool send_order(const std::string& host_id, const proto::Order& order) override;
  // hello_required to a connection we do not know, at most once per heartbeat interval each.
  void ask_for_hello(const std::string& identity, Millis now, proto::MsgType ref);
  // The connection said hello: the next unknown message from it asks again at once.
  void hello_received(const std::string& identity) { hello_asked_.erase(identity); }

 private:
  zmq::socket_t& agents_;
  fleet::Registry& registry_;
  Metrics& metrics_;
  const Clock& clock_;
  const Millis heartbeat_interval_ms_;
  const uint64_t epoch_;
  std::unordered_map<std::string, Millis> hello_asked_;  // connection -> when we last sent it hello_required
};

// Signals on the broadcast PUB (abort, rollback): a fast path only; every host that matters is
// also reached over its own connection.
class PubSignalSink final : public SignalSink {
 public:
  // `epoch`: this coordinator's, stamped on every signal it publishes.
  PubSignalSink(zmq::socket_t& pub, Metrics& metrics, uint64_t epoch) : pub_(pub), metrics_(metrics), epoch_(epoch) {}
  Status broadcast(rollout::SignalKind kind, uint64_t rollout_id, const std::string& service) override;

 private:
  zmq::socket_t& pub_;
  Metrics& metrics_;
  const uint64_t epoch_;
};

}  // namespace gantry::coordinator
