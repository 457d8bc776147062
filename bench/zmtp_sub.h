// A minimal ZMTP 3.0 subscriber over a raw non-blocking TCP socket, for the broadcast benchmark's
// receivers (`gantry-fleet-sim agents --raw-sub`).
//
// Why: the TCP baseline's receivers (`tcp-recv`) are plain sockets in one epoll loop, one read
// per message. A libzmq SUB in the simulator costs 2–3 times that per message (its I/O thread
// reads, writes the pipe, signals the socket's mailbox; the simulator's thread wakes on ZMQ_FD
// and calls recv), all on the same CPUs as the publisher being measured. This subscriber has the
// receive cost of `tcp-recv`, so Gantry's PUB and the TCP writer loop are compared with the same
// kind of receiver. A real agent's receive cost runs on its own host.
//
// What it speaks (RFC 23/ZMTP 3.0, NULL mechanism, as libzmq 4.3 accepts it from a 3.0 peer):
//   -> greeting: 0xFF, 8 x 0x00, 0x7F, version 3.0, mechanism "NULL" (20 bytes, zero-padded),
//      as-server 0, 31 bytes filler (64 bytes in all)
//   -> READY command with the property Socket-Type = "SUB" (sent with the greeting)
//   <- the peer's greeting (checked: signature, major version >= 3, mechanism NULL), its READY
//      (Socket-Type checked to be PUB or XPUB)
//   -> only then the subscription to every topic: a message frame with the body 0x01 (ZMTP 3.0
//      form; a 3.1 peer would send a SUBSCRIBE command). Not earlier: libzmq 4.3 takes a message
//      that it reads before it has sent its own READY for a handshake error and closes.
//   <- frames: flags (bit 0 MORE, bit 1 LONG, bit 2 COMMAND, others 0), size (1 byte, or 8 bytes
//      big-endian when LONG), body.
// Single-frame messages are handed to the caller; multi-frame messages are dropped whole (as
// transport::recv_frame does). PING commands (ZMTP 3.1) are answered with PONG; other commands
// are ignored; ERROR closes. Malformed input (bad greeting, reserved flag bits, a frame over the
// size limit, a message before READY, a bad READY) is counted and the connection closed. A lost
// or closed connection is reopened after a jittered backoff (100 ms doubling to 5 s, as the
// agents' libzmq reconnect_ivl / reconnect_ivl_max); the backoff resets once READY is received.
// Buffers are bounded: input by the frame limit plus one read, output by the handshake.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "bench/zmtp_conn.h"

namespace gantry::bench {

struct ZmtpCounters {
  uint64_t connects = 0;            // connection attempts
  uint64_t ready = 0;               // handshakes completed (peer READY received)
  uint64_t lost = 0;                // connections lost or refused (EOF, reset, connect error)
  uint64_t malformed = 0;           // connections closed for malformed input
  uint64_t multipart_dropped = 0;   // multi-frame messages dropped whole
  uint64_t messages = 0;            // single-frame messages delivered
  uint64_t pings = 0;               // PING commands answered
  uint64_t handshake_timeouts = 0;  // connections closed for not reaching READY in time
};

class ZmtpSub {
 public:
  // (frame body, wall-clock microseconds of the read that completed it)
  using OnMessage = std::function<void(std::string_view, int64_t)>;

  // `key` is the epoll user data of this subscriber's socket in `epfd`.
  ZmtpSub(int epfd, uint64_t key, const sockaddr_in& peer, size_t max_msg, ZmtpCounters* counters, uint64_t seed);
  ~ZmtpSub();
  ZmtpSub(const ZmtpSub&) = delete;
  ZmtpSub& operator=(const ZmtpSub&) = delete;

  // Opens a connection now (no-op while one is open).
  void open();
  // Closes the connection; no reconnect until open() or poll_reconnect() finds it due.
  void close();
  // Reopens the connection when it was lost and its backoff has passed; closes (and schedules
  // the reopening of) a connection that has not completed its handshake within the handshake
  // timeout (a peer that accepts and stays silent, as libzmq's ZMQ_HANDSHAKE_IVL does).
  void poll_reconnect(int64_t now_ms);
  // 30 s by default, as libzmq's ZMQ_HANDSHAKE_IVL.
  void set_handshake_timeout_ms(int64_t ms) { handshake_timeout_ms_ = ms; }
  // Handles the epoll events of this subscriber's socket.
  void on_events(uint32_t events, const OnMessage& on_message);

  bool is_open() const { return conn_.is_open(); }
  bool ready() const { return state_ == State::ready; }

  // The 64-byte greeting this subscriber sends (for tests and documentation).
  static std::string greeting();

 private:
  enum class State { closed, connecting, greeting, handshake, ready };

  void lose(bool malformed);                              // closes and schedules a reconnect
  bool parse(int64_t t_us, const OnMessage& on_message);  // false: malformed (caller closes)
  int on_command(std::string_view body);                  // 0 handled, 1 malformed, 2 the peer's ERROR

  ZmtpConn conn_;  // socket, buffers, frames, reconnect backoff (100 ms doubling to 5 s)
  size_t max_msg_;
  ZmtpCounters* c_;
  State state_ = State::closed;
  int64_t handshake_timeout_ms_ = 30000;
  bool in_multipart_ = false;  // inside a multi-frame message being dropped
};

}  // namespace gantry::bench
