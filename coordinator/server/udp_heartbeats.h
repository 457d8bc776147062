// Agent heartbeats as UDP datagrams (common/transport/udp_heartbeat.h): the receiver bound next
// to the agent endpoint, the check of every datagram against its host's session, the sessions
// offered in Welcome, and the coordinator's own heartbeats sent as datagrams.
#pragma once

#include <memory>
#include <string>

#include "common/protocol/messages.h"
#include "common/transport/udp_heartbeat.h"
#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/agent_sender.h"
#include "coordinator/server/config.h"
#include "coordinator/server/metrics.h"
#include "coordinator/server/zap_auth.h"

namespace gantry::coordinator {

class UdpHeartbeats {
 public:
  UdpHeartbeats(const Config& cfg, fleet::Registry& registry, AgentSender& sender, Metrics& metrics,
                RefusalLog& refusals, const Clock& clock);
  ~UdpHeartbeats();

  // Config::udp_heartbeat. "auto" follows the agent endpoint as bound (tcp://ADDR:PORT, the
  // port resolved if it was a wildcard); a UDP port already taken there is not worth refusing
  // to start over: the agents' connections carry heartbeats as ever, on any free UDP port
  // instead. Off (not an error) when it cannot be opened in "auto".
  [[nodiscard]] Status open(const std::string& agent_endpoint);
  bool enabled() const { return receiver_ != nullptr; }
  int fd() const;
  // "HOST:PORT" bound, or "" when off.
  const std::string& endpoint() const { return endpoint_; }

  // Reads the datagrams waiting (a bounded number per call). Returns false when it stopped at
  // its bound with datagrams perhaps still waiting.
  bool drain();
  // A fresh session for a host's Welcome (the key travels on its connection only), or none.
  void offer(fleet::HostRecord& host, const proto::Hello& hello, proto::Welcome& w, Millis now);
  // Our heartbeat to `h` as a datagram, when its session is confirmed and hears us; false if
  // it must go over the connection instead.
  bool heartbeat(fleet::HostRecord& h, Millis now);
  // Hosts whose datagrams stopped (a firewall, a changed route) hear it an interval before they
  // would expire, and heartbeat over their connection again. Silence is measured up to `heard`
  // (heard_through.h). Lowers `next_check`.
  void check_quiet(Millis heard, Millis now, Millis* next_check);

 private:
  static constexpr int kMaxDatagramsPerPass = 20000;
  const Config& cfg_;
  fleet::Registry& registry_;
  AgentSender& sender_;
  Metrics& metrics_;
  RefusalLog& refusals_;
  const Clock& clock_;
  std::unique_ptr<transport::udp_hb::Receiver> receiver_;  // null: UDP heartbeats off
  std::string endpoint_;
};

}  // namespace gantry::coordinator
