// Reading one chunk of an artifact from a peer coordinator: the operator command
// `artifact-chunk` (PROTOCOL.md §6) over a DEALER, with CURVE as the peer role (the
// installation's shared server keypair as the client's keys). Behind an interface so the fetch
// logic (peer_artifact_fetcher.h) is unit-tested with peers that lie, fail or hang.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "common/transport/zmq_transport.h"
#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::coordinator {

class ChunkSource {
 public:
  struct Piece {
    uint64_t size = 0;  // the whole artifact's size, as the peer says
    std::string data;   // the bytes at the offset asked for, as the peer says
  };
  virtual ~ChunkSource() = default;
  // Up to `length` bytes at `offset` of the artifact `sha256` from the peer at `endpoint`.
  // Error codes: "not_found" (the peer has no such artifact: try the next), "timeout" (no
  // answer in time), "refused" (an error reply), "invalid" (a reply that is not one),
  // "cancelled" (`cancel` was set while waiting), "endpoint" (not a valid endpoint). Nothing in
  // a Piece is checked here beyond its types: the caller checks it against the release.
  virtual Expected<Piece> read(const std::string& endpoint, const std::string& sha256, uint64_t offset, uint32_t length,
                               const std::atomic<bool>& cancel) = 0;
};

// The real peers, over ZeroMQ. One DEALER per peer endpoint, made on first use and made anew
// after a timeout (so a late reply is never taken for a later request's). One thread only (the
// fetcher's worker): it owns its own ZeroMQ context.
class ZmqChunkSource final : public ChunkSource {
 public:
  static constexpr Millis kDefaultTimeoutMs = 5000;
  // `server_curve`: this coordinator's server keys (Config::curve); enabled() false with
  // --insecure-dev, then the connection is plaintext. With CURVE the client authenticates with
  // that same keypair and pins its public key as the server's: every coordinator of one
  // installation holds the same keypair, and a peer's ZAP handler gives that key the role "peer".
  explicit ZmqChunkSource(const transport::CurveOptions& server_curve, Millis timeout_ms = kDefaultTimeoutMs);
  ~ZmqChunkSource() override;
  Expected<Piece> read(const std::string& endpoint, const std::string& sha256, uint64_t offset, uint32_t length,
                       const std::atomic<bool>& cancel) override;

 private:
  Expected<zmq::socket_t*> socket_for(const std::string& endpoint);

  transport::CurveOptions client_;
  Millis timeout_ms_;
  zmq::context_t ctx_{1};
  std::map<std::string, std::unique_ptr<zmq::socket_t>> sockets_;  // by endpoint
  uint64_t next_id_ = 1;
};

}  // namespace gantry::coordinator
