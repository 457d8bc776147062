// A test-side ROUTER speaking Gantry's wire codec: plays a coordinator Gantry's own code would
// not be (a standby that names a leader, a deposed coordinator sending stale orders) to real
// agent and CLI processes. Plaintext only (insecure fleets). Its thread answers each message
// with what the test's handler returns; the destructor stops and joins it.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/protocol/messages.h"

namespace gantry::testing {

class FakeRouter {
 public:
  struct Received {
    std::string identity;
    proto::Message message;
  };
  // Messages to send back to `identity` in answer to `m`.
  using Handler = std::function<std::vector<proto::Message>(const std::string& identity, const proto::Message& m)>;

  // Binds `endpoint` (tcp://127.0.0.1:0 picks a free port); throws std::runtime_error if it cannot.
  explicit FakeRouter(Handler handler, const std::string& endpoint = "tcp://127.0.0.1:0");
  ~FakeRouter();
  FakeRouter(const FakeRouter&) = delete;
  FakeRouter& operator=(const FakeRouter&) = delete;

  // The bound endpoint, tcp://127.0.0.1:PORT.
  const std::string& endpoint() const { return endpoint_; }
  // Queues `m` to `identity` (sent by the thread, in order, after the answers already due).
  void send(const std::string& identity, const proto::Message& m);
  // Everything decoded so far, in arrival order.
  std::vector<Received> received() const;

 private:
  void run();

  Handler handler_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_;
  std::string endpoint_;
  mutable std::mutex mu_;
  std::vector<Received> received_;
  std::vector<std::pair<std::string, proto::Message>> outbox_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace gantry::testing
