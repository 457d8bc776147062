// Heartbeats as UDP datagrams (PROTOCOL.md §5.7): at rest an agent's only traffic is one
// heartbeat a second, and over a ZMTP connection each costs the coordinator a TCP receive, a
// pass through libzmq's I/O thread, a pipe and a wakeup. As a datagram it is one entry of a
// `recvmmsg` batch and a keyed BLAKE2b check (the cost of each: docs/BENCHMARKS.md).
//
// The session (id + 32-byte key) comes in the Welcome, over the agent's (CURVE) connection;
// the connection stays the only channel for everything else, and the only one the coordinator
// answers on. A datagram is 32 bytes:
//
//   0..3   magic: "GHB" (agent -> coordinator) or "GHC" (coordinator -> agent), + version 1
//   4..7   session id, big-endian (never 0)
//   8..15  sequence number, big-endian, strictly increasing within the session (from 1)
//   16..31 BLAKE2b-128 of bytes 0..15 keyed with the session key
//
// Forged datagrams fail the MAC, replayed ones the sequence check; both are counted and
// dropped. The coordinator answers a confirmed session's datagrams with its own heartbeat, a
// "GHC" datagram of the same session (its own sequence), to the address the agent's last
// valid datagram came from: one for one at most, never to an unauthenticated sender.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/expected.h"

namespace gantry::transport::udp_hb {

constexpr std::size_t kDatagramBytes = 32;
constexpr std::size_t kKeyBytes = 32;

using Datagram = std::array<unsigned char, kDatagramBytes>;

// Who sent it: the magic differs, so neither side can take the other's datagram for its own.
enum class From { kAgent, kCoordinator };

// The datagram for (session, seq) under `key` (kKeyBytes).
Datagram seal(uint32_t session, uint64_t seq, std::string_view key, From from = From::kAgent);

// What a received datagram claims, before the MAC is checked (that needs the session's key).
struct Header {
  uint32_t session = 0;
  uint64_t seq = 0;
};
enum class Reject { kNone, kSize, kMagic, kUnknownSession, kMac, kReplay };
const char* reject_name(Reject r);

// Size, magic (of `from`), session != 0 and seq != 0. Returns kNone and fills `h` when it
// looks like one.
Reject parse(const unsigned char* data, std::size_t len, Header* h, From from = From::kAgent);

// A datagram's source (IPv4 or IPv6), kept to answer it.
struct Peer {
  std::array<unsigned char, 28> addr{};  // sockaddr_in or sockaddr_in6
  uint8_t len = 0;                       // 0: none
};
// The MAC of a parsed datagram under `key` (constant time).
bool authentic(const unsigned char* data, std::string_view key);

// A fresh random session key.
std::string new_key();

// The coordinator's receiving socket: non-blocking, a receive buffer large enough to hold a
// whole fleet's heartbeats across a stall of the loop, read in batches with recvmmsg.
class Receiver {
 public:
  Receiver() = default;
  ~Receiver();
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Binds HOST:PORT (HOST an IPv4/IPv6 literal or `*`/`0.0.0.0`/`::`; PORT 0 = any free one).
  Status bind(const std::string& host, uint16_t port);
  int fd() const { return fd_; }
  uint16_t port() const { return port_; }
  // Calls fn(data, len, peer) for each datagram waiting, at most `max` of them; returns how many.
  template <typename Fn>
  int drain(int max, Fn&& fn) {
    int n = 0;
    while (n < max) {
      int got = read_batch();
      if (got <= 0) break;
      for (int i = 0; i < got; ++i) {
        const auto k = static_cast<std::size_t>(i);
        fn(bufs_[k].data(), lens_[k], peers_[k]);
      }
      n += got;
      if (got < kBatch) break;
    }
    return n;
  }

  // One datagram to `peer` (non-blocking; a full buffer or an unreachable peer is an error).
  Status send_to(const Datagram& d, const Peer& peer);

 private:
  static constexpr int kBatch = 64;
  int read_batch();
  int fd_ = -1;
  uint16_t port_ = 0;
  std::array<std::array<unsigned char, 64>, kBatch> bufs_{};
  std::array<std::size_t, kBatch> lens_{};
  std::array<Peer, kBatch> peers_{};
};

// The agent's sending socket, connected to the coordinator's host and the Welcome's port.
class Sender {
 public:
  Sender() = default;
  ~Sender();
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  // `endpoint` is the agent's coordinator endpoint (tcp://HOST:PORT); the datagrams go to
  // HOST at `udp_port`. Resolves HOST once (getaddrinfo), here.
  Status open(const std::string& endpoint, uint16_t udp_port);
  void close();
  bool is_open() const { return fd_ >= 0; }
  // Sends the next datagram of the session; errors (ECONNREFUSED after an ICMP, ENOBUFS, ...)
  // are returned for the caller to log, and the session goes on.
  Status send(uint32_t session, uint64_t seq, std::string_view key);
  int fd() const { return fd_; }
  // Reads what waits on the socket (only the coordinator's address can send to it: it is
  // connected) and returns the highest valid coordinator heartbeat sequence of `session` above
  // `last_seq`, or 0 if none; invalid datagrams are counted in *rejected.
  uint64_t receive(uint32_t session, uint64_t last_seq, std::string_view key, uint64_t* rejected);

 private:
  int fd_ = -1;
};

}  // namespace gantry::transport::udp_hb
