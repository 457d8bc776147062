// CURVE authentication of the coordinator's sockets: the ZAP handler (RFC 27) answering from
// the KeyRing's allowlists, socket monitors that turn refused handshakes into log lines, and a
// rate-limited log of refused peers (a refused agent cannot flood the log).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/server/handshake_guard.h"
#include "coordinator/server/keyring.h"
#include "coordinator/server/metrics.h"

namespace gantry::coordinator {

// One warning per key (or socket and reason) a minute.
class RefusalLog {
 public:
  explicit RefusalLog(const Clock& clock) : clock_(clock) {}
  // Logs `what` unless `key` was logged less than a minute ago.
  void warn(const std::string& key, const std::string& what);
  // A handshake refused on a monitored socket: counted, logged at most once a minute per key.
  void handshake_failed(const std::string& key, const std::string& what);

 private:
  bool due(const std::string& key);
  const Clock& clock_;
  std::map<std::string, Millis> logged_;                // key -> when last logged (monotonic)
  std::map<std::string, uint64_t> handshake_failures_;  // socket:event -> count
};

class ZapAuth {
 public:
  ZapAuth(zmq::context_t& ctx, KeyRing& keys, Metrics& metrics, RefusalLog& refusals);
  // Binds the ZAP endpoint: before any server socket, so no handshake ever finds it missing (and
  // with ZAP_ENFORCE_DOMAIN a missing handler refuses all).
  [[nodiscard]] Status bind();
  // Watches `socket`'s refused handshakes (plaintext or garbage on a CURVE socket, refused keys)
  // when `log_failures`, and feeds its accepted and closed connections to `guard` (if any).
  [[nodiscard]] Status monitor(zmq::socket_t& socket, const std::string& name, bool log_failures,
                               std::unique_ptr<HandshakeGuard> guard = nullptr);
  // Poll items: the ZAP socket, then one per monitor.
  std::vector<zmq::pollitem_t> poll_items();
  // Serves what poll found ready (`revents` in poll_items() order).
  void serve(const std::vector<short>& revents);

 private:
  void drain_zap();
  struct Monitor {
    std::string name;
    std::unique_ptr<zmq::socket_t> socket;
    std::unique_ptr<HandshakeGuard> guard;
  };
  void drain_monitor(Monitor& m);

  zmq::context_t& ctx_;
  KeyRing& keys_;
  Metrics& metrics_;
  RefusalLog& refusals_;
  std::unique_ptr<zmq::socket_t> zap_;
  std::vector<Monitor> monitors_;
};

}  // namespace gantry::coordinator
