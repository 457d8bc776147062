#include "coordinator/server/udp_heartbeats.h"

#include "common/transport/zmq_transport.h"
#include "common/util/log.h"
#include "common/util/names.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
}  // namespace

namespace uh = transport::udp_hb;

UdpHeartbeats::UdpHeartbeats(const Config& cfg, fleet::Registry& registry, AgentSender& sender, Metrics& metrics,
                             RefusalLog& refusals, const Clock& clock)
    : cfg_(cfg), registry_(registry), sender_(sender), metrics_(metrics), refusals_(refusals), clock_(clock) {}

UdpHeartbeats::~UdpHeartbeats() = default;

int UdpHeartbeats::fd() const { return receiver_ ? receiver_->fd() : -1; }

Status UdpHeartbeats::open(const std::string& agent_endpoint) {
  endpoint_.clear();
  if (cfg_.udp_heartbeat == "off") return Status::Ok();
  if (cfg_.heartbeat_misses < 2) {
    L()->info("UDP heartbeats off: they need --heartbeat-misses 2 or more (one interval to notice lost datagrams)");
    return Status::Ok();
  }
  const bool automatic = cfg_.udp_heartbeat == "auto";
  const auto hp = automatic ? transport::tcp_host_port(agent_endpoint) : transport::split_host_port(cfg_.udp_heartbeat);
  const std::string host = hp ? hp->host : "";
  const auto port = hp ? parse_port(hp->port) : std::nullopt;
  if (host.empty() || !port) {
    if (automatic) {
      L()->warn("UDP heartbeats off: cannot tell the address of agent endpoint {}", agent_endpoint);
      return Status::Ok();
    }
    return make_error("config", "--udp-heartbeat '" + cfg_.udp_heartbeat + "' is not HOST:PORT, auto or off");
  }
  receiver_ = std::make_unique<uh::Receiver>();
  Status st = receiver_->bind(host, static_cast<uint16_t>(*port));
  if (!st.ok() && automatic) {
    L()->warn("{}; UDP heartbeats use a free port instead", st.error().message);
    st = receiver_->bind(host, 0);
  }
  if (!st.ok()) {
    receiver_.reset();
    if (automatic) {
      L()->warn("UDP heartbeats off: {}", st.error().message);
      return Status::Ok();
    }
    return make_error("bind", "udp heartbeat: " + st.error().message);
  }
  endpoint_ = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(receiver_->port());
  return Status::Ok();
}

// Each datagram is checked (size, magic, a live session, its MAC, a sequence number beyond the
// last) before it counts as the host's traffic. The first of a session is confirmed on the
// host's connection, which lets the agent stop heartbeating there.
bool UdpHeartbeats::drain() {
  if (!receiver_) return true;
  const Millis now = clock_.now_ms(), wall = clock_.wall_ms();
  const int read =
      receiver_->drain(kMaxDatagramsPerPass, [&](const unsigned char* data, std::size_t len, const uh::Peer& peer) {
        uh::Header hd;
        uh::Reject r = uh::parse(data, len, &hd);
        fleet::UdpSlot* slot = nullptr;
        if (r == uh::Reject::kNone && !(slot = registry_.udp_slot(hd.session))) r = uh::Reject::kUnknownSession;
        if (r == uh::Reject::kNone &&
            !uh::authentic(data, std::string_view(reinterpret_cast<const char*>(slot->key.data()), slot->key.size())))
          r = uh::Reject::kMac;
        if (r == uh::Reject::kNone && hd.seq <= slot->last_seq) r = uh::Reject::kReplay;
        if (r != uh::Reject::kNone) {
          metrics_.udp_rejected[static_cast<size_t>(r)]++;
          // After a restart every agent's old session is unknown here until its hello: expected.
          if (r != uh::Reject::kUnknownSession)
            refusals_.warn(std::string("udp:") + uh::reject_name(r),
                           std::string("heartbeat datagram dropped (") + uh::reject_name(r) +
                               "); more are counted in gantry_udp_heartbeats_rejected_total");
          return;
        }
        slot->last_seq = hd.seq;
        slot->last_datagram = now;
        slot->peer = peer;  // follows the agent (a NAT may rebind it)
        fleet::HostRecord* h = slot->host;
        metrics_.udp_heartbeats++;
        if (!h->said_hello) {
          // Marked unknown (our loop stalled past the timeout?) while its connection lives on: a
          // host on UDP sends nothing else, so ask it for a hello as a stray heartbeat would be.
          sender_.ask_for_hello(h->identity, now, proto::MsgType::kHeartbeat);
          return;
        }
        h->last_seen = now;
        h->last_seen_wall = wall;
        if (!slot->confirmed) {
          slot->confirmed = true;
          proto::Heartbeat confirm{static_cast<uint64_t>(now)};
          confirm.udp_seq = hd.seq;
          sender_.send(h->identity, confirm);
        }
      });
  return read < kMaxDatagramsPerPass;
}

void UdpHeartbeats::offer(fleet::HostRecord& host, const proto::Hello& hello, proto::Welcome& w, Millis now) {
  if (receiver_ && (hello.capabilities & proto::kCapUdpHeartbeat)) {
    std::string key = uh::new_key();
    if (const fleet::UdpSlot* slot = registry_.open_udp_session(host, key, now)) {
      w.udp_port = receiver_->port();
      w.udp_session = slot->session;
      w.udp_key = std::move(key);
    }
  } else {
    registry_.close_udp_session(host);
  }
}

bool UdpHeartbeats::heartbeat(fleet::HostRecord& h, Millis now) {
  if (!receiver_) return false;
  fleet::UdpSlot* slot = registry_.udp_slot(h.udp_session);
  if (!slot || !slot->confirmed || slot->deaf || !slot->peer.len) return false;
  auto d = uh::seal(slot->session, ++slot->sent_seq,
                    std::string_view(reinterpret_cast<const char*>(slot->key.data()), slot->key.size()),
                    uh::From::kCoordinator);
  if (!receiver_->send_to(d, slot->peer).ok()) return false;
  metrics_.udp_heartbeats_sent++;
  h.last_sent = now;
  return true;
}

void UdpHeartbeats::check_quiet(Millis heard, Millis now, Millis* next_check) {
  if (!receiver_) return;
  const Millis quiet =
      static_cast<Millis>(cfg_.heartbeat_interval_ms) * std::min<uint32_t>(cfg_.heartbeat_misses - 1, 2);
  for (auto* h : registry_.udp_quiet(heard, quiet, next_check)) {
    L()->info("{}: no heartbeat datagram for {} ms; asking it to heartbeat over its connection", h->host_id,
              heard - h->last_seen);
    proto::Heartbeat back{static_cast<uint64_t>(now)};
    back.udp_lost = true;
    sender_.send(h->identity, back);
  }
}

}  // namespace gantry::coordinator
