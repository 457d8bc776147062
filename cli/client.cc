#include "cli/client.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "common/protocol/codec.h"

namespace gantry::cli {

Client::Client(std::string endpoint, int timeout_ms, transport::CurveOptions curve)
    : endpoint_(std::move(endpoint)), timeout_ms_(timeout_ms), curve_(std::move(curve)), ctx_(1) {
  reconnect();
}

void Client::reconnect() {
  sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  transport::SocketOptions o;
  o.max_msg_size = 8 * 1024 * 1024;
  o.curve = curve_;
  transport::configure(*sock_, o);
  Status st = transport::connect(*sock_, endpoint_);
  connect_error_ = st.ok() ? "" : st.error().message;
}

Expected<nlohmann::json> Client::call(const std::string& command, nlohmann::json args) {
  proto::OpRequest req;
  req.request_id = std::to_string(::getpid()) + "-" + std::to_string(++seq_);
  req.command = command;
  if (const char* u = std::getenv("USER")) args["user"] = u;
  req.args = std::move(args);
  if (!connect_error_.empty()) return make_error("endpoint", connect_error_);
  try {
    std::string bytes = proto::encode(req);
    auto r = sock_->send(zmq::buffer(bytes), zmq::send_flags::none);
    if (!r) return make_error("unreachable", "cannot send to " + endpoint_);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t item{sock_->handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, left);
      if (!(item.revents & ZMQ_POLLIN)) continue;
      auto frame = transport::recv_frame(*sock_);
      if (!frame) continue;
      auto msg = proto::decode(*frame);
      if (!msg) return make_error("protocol", "bad reply from the coordinator: " + msg.error().message);
      auto* rep = std::get_if<proto::OpReply>(&*msg);
      if (!rep) {
        if (auto* e = std::get_if<proto::ErrorMsg>(&*msg)) return make_error("refused", e->message);
        continue;
      }
      if (rep->request_id != req.request_id) continue;  // a late reply to an earlier request
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
