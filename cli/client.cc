#include "cli/client.h"

#include <cstring>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>

#include "common/protocol/codec.h"
#include "common/util/text.h"

namespace gantry::cli {

Client::Client(std::vector<std::string> endpoints, int timeout_ms, transport::CurveOptions curve)
    : endpoints_(std::move(endpoints)), timeout_ms_(timeout_ms), curve_(std::move(curve)), ctx_(1) {
  if (!endpoints_.empty()) endpoint_ = endpoints_[0];
  reconnect();
}

void Client::reconnect() {
  // The monitor is stopped before its PAIR and the socket are closed: closed the other way round,
  // the next socket's connection was not made for seconds.
  if (sock_ && monitor_) (void)zmq_socket_monitor(sock_->handle(), nullptr, 0);
  monitor_.reset();
  sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  transport::SocketOptions o;
  o.max_msg_size = 8 * 1024 * 1024;
  o.curve = curve_;
  transport::configure(*sock_, o);
  // With other endpoints to ask, a connection refused (or not made within kConnectMs: a machine
  // that is gone) moves on at once rather than after the whole timeout (monitor events).
  if (endpoints_.size() > 1) {
    const std::string ep = "inproc://gantry-cli-monitor-" + std::to_string(++monitors_);
    if (zmq_socket_monitor(sock_->handle(), ep.c_str(), ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED) == 0) {
      monitor_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
      monitor_->set(zmq::sockopt::linger, 0);
      monitor_->connect(ep);
    }
  }
  connected_ = false;
  Status st = transport::connect(*sock_, endpoint_);
  connect_error_ = st.ok() ? "" : st.error().message;
}

// Monitor events since the last look: kConnected, kRefused (nothing listens there), or kNone.
Client::ConnectEvent Client::connect_event() {
  ConnectEvent seen = ConnectEvent::kNone;
  for (int i = 0; monitor_ && i < 16; ++i) {
    zmq::message_t ev, addr;  // libzmq 4: [uint16 event, uint32 value], then the endpoint
    if (!monitor_->recv(ev, zmq::recv_flags::dontwait)) break;
    if (ev.more()) (void)monitor_->recv(addr, zmq::recv_flags::dontwait);
    uint16_t id = 0;
    if (ev.size() >= sizeof id) std::memcpy(&id, ev.data(), sizeof id);
    if (id == ZMQ_EVENT_CONNECTED) seen = ConnectEvent::kConnected;
    if (id == ZMQ_EVENT_CONNECT_RETRIED && seen != ConnectEvent::kConnected) seen = ConnectEvent::kRefused;
  }
  return seen;
}

Expected<nlohmann::json> Client::call(const std::string& command, nlohmann::json args) {
  proto::OpRequest req;
  req.command = command;
  if (const char* u = std::getenv("USER")) args["user"] = u;
  req.args = std::move(args);
  // The endpoints still to try after the one in use: the list in its order after it (the whole
  // list when the one in use is a leader a standby named).
  std::vector<std::string> untried;
  const auto at = std::find(endpoints_.begin(), endpoints_.end(), endpoint_);
  if (at != endpoints_.end()) {
    untried.insert(untried.end(), at + 1, endpoints_.end());
    untried.insert(untried.end(), endpoints_.begin(), at);
  } else {
    untried = endpoints_;
  }
  bool followed = false;
  Error last = make_error("unreachable", "no coordinator endpoint");
  for (;;) {
    req.request_id = std::to_string(::getpid()) + "-" + std::to_string(++seq_);
    std::string leader;
    auto r = call_once(req, &leader);
    if (r.ok()) return r;
    last = r.error();
    if (r.error().code == "not_leader") {
      last.code = "refused";
      // Once: a standby that names another standby as the leader does not send us round.
      if (followed || leader.empty() || leader == endpoint_) return last;
      followed = true;
      std::cerr << "gantry: " << safe_text(endpoint_) << " is a standby; asking the leader at " << leader << "\n";
      endpoint_ = leader;
      reconnect();
      continue;
    }
    if (r.error().code != "unreachable" || untried.empty()) return last;
    std::cerr << "gantry: " << safe_text(r.error().message) << "; trying " << untried.front() << "\n";
    endpoint_ = untried.front();
    untried.erase(untried.begin());
    reconnect();
  }
}

Expected<nlohmann::json> Client::call_once(const proto::OpRequest& req, std::string* leader) {
  if (!connect_error_.empty()) return make_error("endpoint", connect_error_);
  // The leader's operator endpoint of a not_leader answer (the codec checked it: tcp://HOST:PORT).
  auto not_leader = [&](const std::string& message, const std::map<std::string, std::string>& map) {
    auto op = map.find("operator");
    if (op != map.end()) *leader = op->second;
    return make_error("not_leader", message);
  };
  try {
    std::string bytes = proto::encode(req);
    auto r = sock_->send(zmq::buffer(bytes), zmq::send_flags::none);
    if (!r) return make_error("unreachable", "cannot send to " + endpoint_);
    const auto start = std::chrono::steady_clock::now();
    auto deadline = start + std::chrono::milliseconds(timeout_ms_);
    const auto connect_deadline = start + std::chrono::milliseconds(std::min(timeout_ms_, kConnectMs));
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      if (left.count() <= 0) break;
      if (monitor_ && !connected_) {
        if (now >= connect_deadline) {
          reconnect();
          return make_error("unreachable", "no connection to the coordinator at " + endpoint_ + " within " +
                                               std::to_string(std::min(timeout_ms_, kConnectMs)) + " ms");
        }
        left = std::min(left, std::chrono::duration_cast<std::chrono::milliseconds>(connect_deadline - now));
      }
      zmq::pollitem_t items[2] = {{sock_->handle(), 0, ZMQ_POLLIN, 0},
                                  {monitor_ ? monitor_->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, monitor_ ? 2 : 1, left);
      if (monitor_ && (items[1].revents & ZMQ_POLLIN)) {
        const ConnectEvent ev = connect_event();
        if (ev == ConnectEvent::kConnected) connected_ = true;
        if (ev == ConnectEvent::kRefused && !connected_) {
          reconnect();
          return make_error("unreachable", "the coordinator at " + endpoint_ + " refused the connection");
        }
      }
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      auto frame = transport::recv_frame(*sock_);
      if (!frame) continue;
      auto msg = proto::decode(*frame);
      if (!msg) return make_error("protocol", "bad reply from the coordinator: " + msg.error().message);
      auto* rep = std::get_if<proto::OpReply>(&*msg);
      if (!rep) {
        if (auto* e = std::get_if<proto::ErrorMsg>(&*msg)) {
          if (e->code == "not_leader") return not_leader(e->message, e->leader);
          return make_error("refused", e->message);
        }
        continue;
      }
      if (rep->request_id != req.request_id) continue;  // a late reply to an earlier request
      if (!rep->ok && rep->error_code == "not_leader") return not_leader(rep->error, rep->leader);
      if (!rep->ok) return make_error("refused", rep->error);
      return rep->result;
    }
  } catch (const zmq::error_t& e) {
    return make_error("unreachable", std::string("ZeroMQ error: ") + e.what());
  }
  // Drop the socket so a late reply cannot be mistaken for the next request's.
  reconnect();
  return make_error("unreachable", "no answer from the coordinator at " + endpoint_ + " within " +
                                       std::to_string(timeout_ms_) + " ms");
}

}  // namespace gantry::cli
