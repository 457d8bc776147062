// Bounds the memory that peers nobody accepted can make the coordinator hold. libzmq reads a
// connection's handshake frames (each up to the socket's ZMQ_MAXMSGSIZE) before ZAP has judged
// its key, keeps a connection in its handshake for up to ZMQ_HANDSHAKE_IVL, and has no limit on
// connections. A HandshakeGuard follows one server socket's connections through the socket's
// monitor (ACCEPTED and DISCONNECTED carry the connection's file descriptor) and keeps at most
// `max_unproven` of them unproven: a connection is proven when a message arrives from it (its
// ZMQ_SRCFD; only a finished handshake delivers messages), and needs no watching once it is older
// than the handshake interval (libzmq has ended every handshake by then). Past the cap, the
// oldest unproven connection older than `evict_after_ms` makes room (a slow handshake is a
// hostile one: a real one takes two round trips); without one, the newest is refused. Refusing
// is the Refuse callback's side effect (shutdown(2) of the fd: libzmq sees the peer go away).
//
// So at any time at most max_unproven connections of the socket are in their handshake, each
// holding at most one frame of the socket's limit: a fixed figure (docs/SECURITY.md, Limits).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "common/util/clock.h"

namespace gantry::coordinator {

class HandshakeGuard {
 public:
  struct Limits {
    size_t max_unproven = 256;  // unproven connections at once
    Millis window_ms = 12000;   // ZMQ_HANDSHAKE_IVL plus a margin: older connections are past it
    Millis evict_after_ms = 0;  // 0: never evict, refuse the newest instead
  };
  // Shuts the connection with this fd; true if it did (the fd was still the socket's).
  using Refuse = std::function<bool(int fd)>;

  HandshakeGuard(std::string socket_name, Limits limits, const Clock& clock, Refuse refuse);

  // Monitor events, in the order the monitor delivered them.
  void accepted(int fd);
  void disconnected(int fd);
  // A message arrived from this connection (ZMQ_SRCFD): its handshake is over.
  void proven(int fd);
  // After a batch of events: enforces the cap, refusing connections past it.
  void settle();

  // Unproven connections being watched (after dropping those past the window).
  size_t unproven();
  uint64_t refused() const { return refused_; }
  const std::string& name() const { return name_; }
  const Limits& limits() const { return limits_; }

 private:
  struct Conn {
    Millis since = 0;
    uint64_t seq = 0;  // order of acceptance: the newest has the largest
  };
  void expire(Millis now);

  std::string name_;
  Limits limits_;
  const Clock& clock_;
  Refuse refuse_;
  std::map<int, Conn> conns_;  // fd -> unproven connection
  uint64_t next_seq_ = 0;
  uint64_t refused_ = 0;
};

// What the coordinator's server sockets allow peers nobody accepted (docs/SECURITY.md, Limits).
namespace unaccepted {
// Largest frame per socket (ZMQ_MAXMSGSIZE), the largest legitimate message with room to spare:
// agents send at most a Hello with every field at its limit (under 180 KiB, test
// HandshakeGuard.TheLargestAgentMessageFitsTheAgentSocket); operators upload in chunks of at
// most 2 MiB of data (PROTOCOL.md §6); subscribers send only their subscription.
inline constexpr int64_t kAgentFrame = 256 * 1024;
inline constexpr int64_t kOperatorFrame = 4 * 1024 * 1024;
inline constexpr int64_t kPubFrame = 4 * 1024;
// ZMQ_HANDSHAKE_IVL of the server sockets; a guard watches a connection this long plus 2 s.
inline constexpr int kHandshakeIvlMs = 10000;
inline constexpr Millis kWindowMs = kHandshakeIvlMs + 2000;
// Past the cap, an unproven connection this old makes room for a new one (agent and operator
// sockets; the PUB socket never hears from its peers, so it refuses the newest instead).
inline constexpr Millis kEvictAfterMs = 2000;
// Unfinished handshakes at once, per socket.
inline constexpr size_t kAgentUnproven = 256;
inline constexpr size_t kOperatorUnproven = 8;
inline constexpr size_t kPubUnproven = 512;
// What libzmq holds for one connection besides its frame: 8 KiB read and write batches, the
// engine, session, pipes and CURVE state (measured ~25 KiB), and room for what arrives on
// connections past the cap before the loop refuses them (Security.PeersNobodyAccepted*).
inline constexpr int64_t kConnectionOverhead = 96 * 1024;
// The fixed figure: what all peers nobody accepted can make the coordinator hold at once.
inline constexpr int64_t bound_bytes() {
  return static_cast<int64_t>(kAgentUnproven) * (kAgentFrame + kConnectionOverhead) +
         static_cast<int64_t>(kOperatorUnproven) * (kOperatorFrame + kConnectionOverhead) +
         static_cast<int64_t>(kPubUnproven) * (kPubFrame + kConnectionOverhead);
}
}  // namespace unaccepted

// Shuts the connection `fd` (from a socket monitor's ACCEPTED event) if it is still a TCP
// connection whose local port is `local_port` (the fd may have been closed and reused since the
// event): shutdown(2), never close(2), so libzmq closes it as a peer that went away.
bool shutdown_connection(int fd, int local_port);

}  // namespace gantry::coordinator
