// The agent side of the coordinator: the agent ROUTER's messages authenticated (by key, per
// message), decoded, and dispatched through a fixed table by type; hellos (Welcome, UDP
// session, level-triggered reconciliation), reports, acks, progress and fetches; the
// coordinator's own heartbeats to agents; and taking a host out when its key loses standing.
#pragma once

#include <functional>
#include <map>
#include <string>

#include <zmq.hpp>

#include "common/protocol/messages.h"
#include "common/transport/zmq_transport.h"
#include "common/util/clock.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/agent_sender.h"
#include "coordinator/server/artifact_server.h"
#include "coordinator/server/change_flag.h"
#include "coordinator/server/config.h"
#include "coordinator/server/keyring.h"
#include "coordinator/server/metrics.h"
#include "coordinator/server/rollout_executor.h"
#include "coordinator/server/udp_heartbeats.h"
#include "coordinator/server/zap_auth.h"

namespace gantry::coordinator {

class AgentChannel {
 public:
  struct Deps {
    const Config& cfg;
    const Clock& clock;
    zmq::socket_t& socket;
    fleet::Registry& registry;
    KeyRing& keys;
    store::Store& store;
    RolloutExecutor& executor;
    ArtifactServer& artifacts;
    UdpHeartbeats& udp;
    AgentSender& sender;
    Metrics& metrics;
    RefusalLog& refusals;
    ChangeFlag& changed;
    uint64_t epoch;
  };
  explicit AgentChannel(Deps deps);

  // Reads what waits on the agent socket (a bounded number per call), then persists and applies
  // the reports and hellos read (one group commit). A message whose handler throws is logged
  // and dropped; the next is served. Returns false when it stopped at its bound with messages
  // still waiting.
  bool drain();
  // Called with the connection (ZMQ_SRCFD) of every message drain reads: its handshake is over.
  void on_connection_proven(std::function<void(int fd)> f) { proven_ = std::move(f); }
  // Group commit: the hellos and reports read in one pass are persisted together (one
  // transaction per rollout), then acted on. Called at the end of every pass.
  void flush();
  // Whether the last drain read anything but greeted hosts' heartbeats.
  bool events_in_last_pass() const { return events_in_pass_; }
  // One message (exposed for the loop's tests and fuzzing; drain calls it).
  void on_message(const transport::Incoming& in);
  // A heartbeat to every greeted host that heard nothing from us for its period.
  void heartbeat(Millis now);
  // Takes a host out at once, as a lost heartbeat would: no more orders, its rollouts count it unknown.
  void disconnect_host(const std::string& host_id, const std::string& why);

 private:
  static constexpr int kMaxMessagesPerPass = 10000;
  bool secure() const { return d_.cfg.curve.enabled(); }
  void on_hello(const std::string& identity, const proto::Hello& h);
  void on_report(fleet::HostRecord& host, const proto::Report& r);
  // How long `h` may go without hearing from us before a heartbeat is due.
  Millis heartbeat_period(const fleet::HostRecord& h) const;

  Deps d_;
  std::function<void(int fd)> proven_;
  bool events_in_pass_ = false;
  std::map<std::string, store::HostRow> pending_hosts_;  // hellos to persist
};

}  // namespace gantry::coordinator
