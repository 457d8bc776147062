#include "coordinator/server/zap_auth.h"

#include <cstring>

#include "common/util/log.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* LA() {
  static const auto l = log::get("auth");
  return l.get();
}
}  // namespace

bool RefusalLog::due(const std::string& key) {
  Millis now = clock_.now_ms();
  auto it = logged_.find(key);
  if (it != logged_.end() && now - it->second < 60000) return false;
  if (logged_.size() > 10000) logged_.clear();  // bounded; at worst we log again
  logged_[key] = now;
  return true;
}

void RefusalLog::warn(const std::string& key, const std::string& what) {
  if (due(key)) LA()->warn("{}", what);
}

void RefusalLog::handshake_failed(const std::string& key, const std::string& what) {
  // One line per socket and reason a minute, with how many since: a flood cannot flood the log.
  const uint64_t n = ++handshake_failures_[key];
  if (due(key)) LA()->warn("{}; {} such refusal(s) so far", what, n);
}

ZapAuth::ZapAuth(zmq::context_t& ctx, KeyRing& keys, Metrics& metrics, RefusalLog& refusals)
    : ctx_(ctx), keys_(keys), metrics_(metrics), refusals_(refusals) {}

Status ZapAuth::bind() {
  try {
    zap_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::rep);
    zap_->set(zmq::sockopt::linger, 0);
    zap_->bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return make_error("bind", std::string("ZAP handler: ") + e.what());
  }
  return Status::Ok();
}

Status ZapAuth::monitor(zmq::socket_t& socket, const std::string& name, bool log_failures,
                        std::unique_ptr<HandshakeGuard> guard) {
  // libzmq refuses bad handshakes silently; these monitors make each refusal a log line. The
  // guard's events carry the connection's fd (ACCEPTED, DISCONNECTED).
  int events = 0;
  if (log_failures)
    events |=
        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (guard) events |= ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED;
  std::string ep = "inproc://gantry-monitor-" + name;
  try {
    if (zmq_socket_monitor(socket.handle(), ep.c_str(), events) != 0) throw zmq::error_t();
    auto m = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
    m->set(zmq::sockopt::linger, 0);
    m->connect(ep);
    monitors_.push_back(Monitor{name, std::move(m), std::move(guard)});
  } catch (const zmq::error_t& e) {
    return make_error("bind", "monitor of the " + name + " socket: " + e.what());
  }
  return Status::Ok();
}

std::vector<zmq::pollitem_t> ZapAuth::poll_items() {
  std::vector<zmq::pollitem_t> items;
  if (!zap_) return items;
  items.push_back({zap_->handle(), 0, ZMQ_POLLIN, 0});
  for (auto& m : monitors_) items.push_back({m.socket->handle(), 0, ZMQ_POLLIN, 0});
  return items;
}

void ZapAuth::serve(const std::vector<short>& revents) {
  if (revents.empty()) return;
  if (revents[0] & ZMQ_POLLIN) drain_zap();
  for (size_t i = 0; i < monitors_.size() && i + 1 < revents.size(); ++i)
    if (revents[i + 1] & ZMQ_POLLIN) drain_monitor(monitors_[i]);
}

void ZapAuth::drain_zap() {
  // ZAP (RFC 27) over inproc: 7 request frames for CURVE, 6 reply frames. Bounded per turn.
  for (int i = 0; i < 1000; ++i) {
    std::vector<zmq::message_t> req;
    zmq::message_t part;
    if (!zap_->recv(part, zmq::recv_flags::dontwait)) return;
    req.push_back(std::move(part));
    while (req.back().more() && req.size() < 16) {
      zmq::message_t m;
      if (!zap_->recv(m, zmq::recv_flags::none)) break;
      req.push_back(std::move(m));
    }
    while (req.back().more()) {  // never from libzmq; drain defensively
      zmq::message_t m;
      if (!zap_->recv(m, zmq::recv_flags::none)) break;
      req.back() = std::move(m);
    }
    std::string request_id = req.size() > 1 ? req[1].to_string() : "";
    ZapDecision d;
    if (req.size() < 6 || req[0].to_string() != "1.0") {
      d.reason = "malformed ZAP request";
    } else if (req[5].to_string() != "CURVE" || req.size() != 7 || req[6].size() != 32) {
      d.reason = "only CURVE clients are allowed";
    } else {
      char z85[41] = {};
      zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
      d = keys_.zap(req[2].to_string(), z85, req[3].to_string());
      if (!d.allow) {
        metrics_.zap_denied++;
        refusals_.warn(z85,
                       "handshake from " + req[3].to_string() + " refused on " + req[2].to_string() + ": " + d.reason);
      }
    }
    const std::string code = d.allow ? "200" : "400";
    try {
      zap_->send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(code), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(d.reason.substr(0, 200)), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(d.allow ? d.user_id : std::string()), zmq::send_flags::sndmore);
      zap_->send(zmq::str_buffer(""), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      LA()->error("ZAP reply failed: {}", e.what());
    }
  }
}

void ZapAuth::drain_monitor(Monitor& m) {
  zmq::socket_t& mon = *m.socket;
  const std::string& socket_name = m.name;
  for (int i = 0; i < 1000; ++i) {
    zmq::message_t ev;
    if (!mon.recv(ev, zmq::recv_flags::dontwait)) break;
    std::string endpoint;
    if (ev.more()) {
      zmq::message_t addr;
      if (mon.recv(addr, zmq::recv_flags::none)) endpoint = addr.to_string();
    }
    if (ev.size() < 6) continue;
    uint16_t event = 0;
    int32_t value = 0;
    std::memcpy(&event, ev.data(), 2);
    std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_DISCONNECTED) {
      if (m.guard && event == ZMQ_EVENT_ACCEPTED) m.guard->accepted(value);
      if (m.guard && event == ZMQ_EVENT_DISCONNECTED) m.guard->disconnected(value);
      continue;
    }
    metrics_.auth_refused++;
    std::string why = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "refused by ZAP (key not allowed)"
                      : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                          ? "protocol error (plaintext, wrong mechanism or garbage) code " + std::to_string(value)
                          : "handshake failed (" + std::string(zmq_strerror(value)) + ")";
    refusals_.handshake_failed(socket_name + ":" + std::to_string(event),
                               socket_name + " connection on " + endpoint + " " + why);
  }
  // After the whole batch: a fd closed and reused within it is judged as its newest connection.
  if (m.guard) {
    const uint64_t before = m.guard->refused();
    m.guard->settle();
    if (const uint64_t n = m.guard->refused() - before; n > 0) {
      refusals_.handshake_failed(socket_name + ":cap", std::to_string(n) + " " + socket_name +
                                                           " connection(s) closed in their handshake: more than " +
                                                           std::to_string(m.guard->limits().max_unproven) +
                                                           " unfinished handshakes");
    }
  }
}

}  // namespace gantry::coordinator
