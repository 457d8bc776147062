#include "common/transport/zmq_transport.h"

#include <cstring>

#include "common/protocol/codec.h"
#include "common/util/endpoint.h"

#include <vector>

namespace gantry::transport {

namespace {
#ifdef ZMQ_ZAP_ENFORCE_DOMAIN
constexpr int kZapEnforceDomain = ZMQ_ZAP_ENFORCE_DOMAIN;
#else
constexpr int kZapEnforceDomain = 93;  // value from libzmq's zmq_draft.h
#endif
#ifdef ZMQ_ZERO_COPY_RECV
constexpr int kZeroCopyRecv = ZMQ_ZERO_COPY_RECV;
#else
constexpr int kZeroCopyRecv = 10;      // value from libzmq's zmq_draft.h; Debian's 4.3.4 accepts it
#endif
}  // namespace

Status check_connect_endpoint(const std::string& ep) { return check_tcp_endpoint(ep); }

std::optional<HostPort> split_host_port(std::string_view hp) {
  const auto colon = hp.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  HostPort out{std::string(hp.substr(0, colon)), std::string(hp.substr(colon + 1)), false};
  if (out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
    out.ipv6_literal = true;
  }
  return out;
}

std::optional<HostPort> tcp_host_port(std::string_view ep) {
  constexpr std::string_view kTcp = "tcp://";
  if (ep.substr(0, kTcp.size()) != kTcp) return std::nullopt;
  ep.remove_prefix(kTcp.size());
  if (const auto semi = ep.find(';'); semi != std::string_view::npos) ep.remove_prefix(semi + 1);  // SOURCE;
  return split_host_port(ep);
}

namespace {
Status attach(zmq::socket_t& s, const std::string& endpoint, bool bind) {
  try {
    // libzmq resolves IPv4 only unless ZMQ_IPV6 is on, and then maps every name to IPv6. On for
    // an [IPv6] literal only, so names and IPv4 endpoints resolve as they always did (and as the
    // UDP heartbeat sender resolves them: udp_heartbeat.cc).
    if (auto hp = tcp_host_port(endpoint); hp && hp->ipv6_literal) s.set(zmq::sockopt::ipv6, 1);
    if (bind)
      s.bind(endpoint);
    else
      s.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return make_error("endpoint",
                      std::string(bind ? "cannot bind '" : "cannot connect to '") + endpoint + "': " + e.what());
  }
  return Status::Ok();
}
}  // namespace

Status connect(zmq::socket_t& s, const std::string& endpoint) { return attach(s, endpoint, false); }
Status bind(zmq::socket_t& s, const std::string& endpoint) { return attach(s, endpoint, true); }

void configure_context(zmq::context_t& ctx) {
  // Older libzmq without the option answers EINVAL: then it keeps its default, nothing else changes.
  (void)zmq_ctx_set(ctx.handle(), kZeroCopyRecv, 0);
}

void configure(zmq::socket_t& s, const SocketOptions& o) {
  s.set(zmq::sockopt::sndhwm, o.send_hwm);
  s.set(zmq::sockopt::rcvhwm, o.recv_hwm);
  s.set(zmq::sockopt::maxmsgsize, o.max_msg_size);
  s.set(zmq::sockopt::linger, o.linger_ms);
  s.set(zmq::sockopt::reconnect_ivl, o.reconnect_ivl_ms);
  s.set(zmq::sockopt::reconnect_ivl_max, o.reconnect_ivl_max_ms);
  if (o.backlog > 0) s.set(zmq::sockopt::backlog, o.backlog);
  if (o.handshake_ivl_ms > 0) s.set(zmq::sockopt::handshake_ivl, o.handshake_ivl_ms);
  auto type = s.get(zmq::sockopt::type);
  if (type == ZMQ_ROUTER) {
    if (o.router_mandatory) s.set(zmq::sockopt::router_mandatory, 1);
    if (o.router_handover) s.set(zmq::sockopt::router_handover, 1);
  }
  if (!o.routing_id.empty()) s.set(zmq::sockopt::routing_id, o.routing_id);
  if (o.curve.enabled()) {
    if (o.curve.server) {
      s.set(zmq::sockopt::curve_server, 1);
      s.set(zmq::sockopt::curve_secretkey, o.curve.secret_key);
      s.set(zmq::sockopt::zap_domain, o.curve.zap_domain);
      // Fail closed: without a running ZAP handler, refuse every client.
      int on = 1;
      // ZMQ_ZAP_ENFORCE_DOMAIN is a draft option in libzmq 4.3; cppzmq has no wrapper for it.
      // If this libzmq cannot enforce it, refuse to run rather than silently accept any key.
      if (zmq_setsockopt(s.handle(), kZapEnforceDomain, &on, sizeof on) != 0) throw zmq::error_t();
    } else {
      s.set(zmq::sockopt::curve_serverkey, o.curve.server_public_key);
      s.set(zmq::sockopt::curve_publickey, o.curve.public_key);
      s.set(zmq::sockopt::curve_secretkey, o.curve.secret_key);
    }
  }
}

Status send_raw_to(zmq::socket_t& router, std::string_view identity, std::string_view bytes) {
  try {
    auto r1 = router.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!r1) return make_error("busy", "send queue full");
    auto r2 = router.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    if (!r2) return make_error("busy", "send queue full");
  } catch (const zmq::error_t& e) {
    return make_error(e.num() == EHOSTUNREACH ? "unreachable" : "zmq", e.what());
  }
  return Status::Ok();
}

Status send_msg_to(zmq::socket_t& router, std::string_view identity, zmq::message_t&& payload) {
  try {
    auto r1 = router.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!r1) return make_error("busy", "send queue full");
    auto r2 = router.send(payload, zmq::send_flags::dontwait);
    if (!r2) return make_error("busy", "send queue full");
  } catch (const zmq::error_t& e) {
    return make_error(e.num() == EHOSTUNREACH ? "unreachable" : "zmq", e.what());
  }
  return Status::Ok();
}

Status send_to(zmq::socket_t& router, std::string_view identity, const proto::Message& m) {
  return send_raw_to(router, identity, proto::encode(m));
}

Status send(zmq::socket_t& s, const proto::Message& m) {
  std::string bytes = proto::encode(m);
  try {
    auto r = s.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    if (!r) return make_error("busy", "send queue full");
  } catch (const zmq::error_t& e) {
    return make_error("zmq", e.what());
  }
  return Status::Ok();
}

std::optional<Incoming> recv_routed(zmq::socket_t& router, bool* dropped) {
  if (dropped) *dropped = false;
  std::vector<zmq::message_t> parts;
  parts.emplace_back();
  if (!router.recv(parts.back(), zmq::recv_flags::dontwait)) return std::nullopt;
  while (parts.back().more() && parts.size() < 64) {
    zmq::message_t m;
    if (!router.recv(m, zmq::recv_flags::none)) break;
    parts.push_back(std::move(m));
  }
  while (parts.back().more()) {  // absurd frame counts: drain without keeping
    zmq::message_t m;
    if (!router.recv(m, zmq::recv_flags::none)) break;
    parts.back() = std::move(m);
  }
  if (parts.size() != 2) {
    if (dropped) *dropped = true;
    return std::nullopt;
  }
  Incoming in;
  in.identity = parts[0].to_string();
  in.payload = parts[1].to_string();
  // The C call returns null when there is no such property (no CURVE); cppzmq's gets() throws,
  // and an exception per message is a cost paid on every heartbeat.
  if (const char* uid = zmq_msg_gets(parts[1].handle(), "User-Id")) in.user_id = uid;
  in.source_fd = zmq_msg_get(parts[1].handle(), ZMQ_SRCFD);
  return in;
}

bool recv_frame_msg(zmq::socket_t& s, zmq::message_t& msg, bool* dropped) {
  if (dropped) *dropped = false;
  if (!s.recv(msg, zmq::recv_flags::dontwait)) return false;
  if (!msg.more()) return true;
  // Multi-frame where one is expected: drain and drop.
  while (msg.more()) {
    if (!s.recv(msg, zmq::recv_flags::none)) break;
  }
  if (dropped) *dropped = true;
  return false;
}

std::optional<std::string> recv_frame(zmq::socket_t& s, bool* dropped) {
  zmq::message_t msg;
  if (!recv_frame_msg(s, msg, dropped)) return std::nullopt;
  return msg.to_string();
}

bool monitor_saw(zmq::socket_t& monitor, uint16_t event, int max) {
  bool seen = false;
  for (int i = 0; i < max; ++i) {
    zmq::message_t ev, addr;  // libzmq 4: [uint16 event, uint32 value], then the endpoint
    if (!monitor.recv(ev, zmq::recv_flags::dontwait)) break;
    if (ev.more()) (void)monitor.recv(addr, zmq::recv_flags::dontwait);
    uint16_t id = 0;
    if (ev.size() >= sizeof id) std::memcpy(&id, ev.data(), sizeof id);
    seen = seen || id == event;
  }
  return seen;
}

}  // namespace gantry::transport
