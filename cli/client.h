// The operator's connection to the coordinator: one request, one reply, bounded in time. With
// several coordinators (a leader and standbys) it asks one at a time: a standby's not_leader
// answer sends the request once to the leader it names; a timeout, a refused connection or no
// connection within 2 s sends it to the next endpoint.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/transport/zmq_transport.h"
#include "common/util/expected.h"

namespace gantry::cli {

class Client {
 public:
  // `endpoints`: tried in order (checked by the caller: cli/app.cc); `timeout_ms` bounds each try.
  Client(std::vector<std::string> endpoints, int timeout_ms, transport::CurveOptions curve = {});
  // Sends one request; the Error code is "unreachable" (no endpoint replied in time) or "refused"
  // (the coordinator answered with an error, in Error::message). A not_leader answer is retried
  // once at the leader's operator endpoint; a timeout at the next endpoint of the list, each
  // endpoint at most once per call. The endpoint that answered is asked first by the next call.
  Expected<nlohmann::json> call(const std::string& command, nlohmann::json args);

 private:
  // One try at `endpoint_`. not_leader (with `leader` set to the operator endpoint it named, if
  // any) is the Error code "not_leader".
  Expected<nlohmann::json> call_once(const proto::OpRequest& req, std::string* leader);
  void reconnect();
  enum class ConnectEvent { kNone, kConnected, kRefused };
  ConnectEvent connect_event();
  // With several endpoints, a try that has no connection after this long moves on.
  static constexpr int kConnectMs = 2000;
  std::vector<std::string> endpoints_;
  std::string endpoint_;  // the one in use
  int timeout_ms_;
  transport::CurveOptions curve_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> sock_;
  std::unique_ptr<zmq::socket_t> monitor_;  // sock_'s connection events (several endpoints only)
  bool connected_ = false;                  // sock_ has connected (monitor_ said so)
  uint64_t monitors_ = 0;
  std::string connect_error_;  // the endpoint was refused by connect (checked earlier: cli/app.cc)
  uint64_t seq_ = 0;
};

}  // namespace gantry::cli
