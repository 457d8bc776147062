// The operator's connection to the coordinator: one request, one reply, bounded in time.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/transport/zmq_transport.h"
#include "common/util/expected.h"

namespace gantry::cli {

class Client {
 public:
  Client(std::string endpoint, int timeout_ms, transport::CurveOptions curve = {});
  // Sends one request; the Error code is "unreachable" (no reply in time) or "refused"
  // (the coordinator answered with an error, in Error::message).
  Expected<nlohmann::json> call(const std::string& command, nlohmann::json args);

 private:
  void reconnect();
  std::string endpoint_;
  int timeout_ms_;
  transport::CurveOptions curve_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> sock_;
  std::string connect_error_;  // the endpoint was refused by connect (checked earlier: cli/app.cc)
  uint64_t seq_ = 0;
};

}  // namespace gantry::cli
