#include "coordinator/server/agent_sender.h"

#include "common/transport/zmq_transport.h"
#include "common/util/log.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
}  // namespace

AgentSender::AgentSender(zmq::socket_t& agents, fleet::Registry& registry, Metrics& metrics, const Clock& clock,
                         Millis heartbeat_interval_ms, uint64_t epoch)
    : agents_(agents),
      registry_(registry),
      metrics_(metrics),
      clock_(clock),
      heartbeat_interval_ms_(heartbeat_interval_ms),
      epoch_(epoch) {}

void AgentSender::send(const std::string& identity, const proto::Message& m) {
  auto s = transport::send_to(agents_, identity, m);
  metrics_.messages_out++;
  if (!s.ok()) {
    L()->debug("send {} to {} failed: {}", proto::type_name(proto::type_of(m)), identity, s.error().message);
    return;
  }
  // Any message counts as our heartbeat: the next one is due a full period after this.
  if (auto* h = registry_.by_identity(identity)) h->last_sent = clock_.now_ms();
}

Status AgentSender::send_frame(const std::string& identity, zmq::message_t&& frame) {
  metrics_.messages_out++;
  return transport::send_msg_to(agents_, identity, std::move(frame));
}

Status AgentSender::send_raw(const std::string& identity, const std::string& bytes) {
  metrics_.messages_out++;
  return transport::send_raw_to(agents_, identity, bytes);
}

bool AgentSender::send_order(const std::string& host_id, const proto::Order& order) {
  auto* host = registry_.find(host_id);
  if (!host || !host->online || !host->said_hello) return false;
  proto::Order stamped = order;
  stamped.epoch = epoch_;
  send(host->identity, stamped);
  return true;
}

// After a restart, an agent's socket reconnects and delivers the heartbeats it queued while we
// were away. Answering each with hello_required would earn as many hellos, several per agent in
// a reconnect storm. One request per connection per heartbeat interval is enough: the agent's hello answers it, and if
// that is lost the next message after the interval asks again.
void AgentSender::ask_for_hello(const std::string& identity, Millis now, proto::MsgType ref) {
  if (hello_asked_.size() > 50000) {
    for (auto it = hello_asked_.begin(); it != hello_asked_.end();)
      it = now - it->second >= heartbeat_interval_ms_ ? hello_asked_.erase(it) : std::next(it);
  }
  auto [asked, fresh] = hello_asked_.try_emplace(identity, now);
  if (!fresh && now - asked->second < heartbeat_interval_ms_) return;
  asked->second = now;
  send(identity, proto::ErrorMsg{"hello_required", "say hello first", static_cast<uint16_t>(ref), ""});
}

Status PubSignalSink::broadcast(rollout::SignalKind kind, uint64_t rollout_id, const std::string& service) {
  metrics_.broadcasts++;
  return transport::send(pub_, proto::Signal{rollout::signal_kind_name(kind), rollout_id, service, epoch_});
}

}  // namespace gantry::coordinator
