// A minimal ZMTP 3.0 DEALER with the CURVE mechanism (RFC 23 + RFC 26/CurveZMQ) over a raw
// non-blocking TCP socket, for the reconnect-storm benchmark's simulated agents
// (`gantry-fleet-sim agents --raw-dealer`).
//
// Why: in a reconnect storm every simulated agent does the client's half of a CURVE handshake on
// the same 2 CPUs as the coordinator being measured. Through libzmq that half cost more CPU than
// the coordinator's (a libzmq socket, its I/O thread, pipes and mailbox signals per agent; 4.4 of
// 8.8 CPU s in a 10,000-agent storm). This client does the same handshake and the same bytes on
// the wire with one socket in the simulator's epoll loop, so the benchmark's CPU goes to the
// coordinator. A real agent's half runs on its own host. `bench/run storm` measures both kinds of
// simulated agent and prints both (docs/BENCHMARKS.md figure 4).
//
// What it speaks (as libzmq 4.3 does; curve_client_tools.hpp, curve_mechanism_base.cpp):
//   -> greeting: 0xFF, 8 x 0x00, 0x7F, version 3.0, mechanism "CURVE", as-server 0, filler (64 B)
//   -> HELLO command (200 B): "\x05HELLO", version 1.0, 72 zero bytes, C', short nonce 1,
//      Box[64 zero bytes](C'->S) with nonce "CurveZMQHELLO---" + short nonce
//   <- the peer's greeting (checked: signature, major version >= 3, mechanism CURVE)
//   <- WELCOME (168 B): "\x07WELCOME", 16-byte nonce, Box[S' + cookie](S->C'), nonce "WELCOME-" + it
//   -> INITIATE: "\x08INITIATE", cookie, short nonce 2, Box[C + vouch + metadata](C'->S') with
//      nonce "CurveZMQINITIATE" + short nonce; vouch = Box[C' + S](C->S'), nonce "VOUCH---" + 16
//      random bytes; metadata Socket-Type = DEALER
//   <- READY: "\x05READY", short nonce, Box[metadata](S'->C'), nonce "CurveZMQREADY---" + it;
//      or ERROR (the server's ZAP handler refused us): counted, the connection closed
//   <-> messages: data frames whose body is "\x07MESSAGE", short nonce (ours 3, 4, ...; the
//      server's must rise), Box[flags + body] with nonce "CurveZMQMESSAGEC"/"...S" + it (flags:
//      bit 0 MORE, bit 1 COMMAND).
// Single-frame messages are handed to the caller; multi-frame messages are dropped whole and
// encrypted commands ignored. Messages sent before READY wait (as in a libzmq DEALER's pipe, up to
// kMaxQueued) and go out encrypted once READY arrives, also after a reconnect. Malformed input (bad
// greeting, a frame over the size limit, a box that does not open, a nonce that does not rise)
// is counted and the connection closed. A lost or refused connection is reopened after a
// jittered backoff (reconnect_ivl doubling to reconnect_ivl_max, as libzmq), reset once READY
// arrives; losing a connection that had reached READY is reported to the caller (libzmq's
// DISCONNECTED monitor event, which the real agent reacts to).
#pragma once

#include <netinet/in.h>
#include <sodium.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

#include "bench/zmtp_conn.h"

namespace gantry::bench {

struct CurveDealerCounters {
  uint64_t connects = 0;    // connection attempts
  uint64_t ready = 0;       // handshakes completed (READY opened)
  uint64_t lost = 0;        // connections lost or refused (EOF, reset, connect error)
  uint64_t refused = 0;     // ERROR commands (the server refused the handshake)
  uint64_t malformed = 0;   // connections closed for malformed input
  uint64_t messages = 0;    // single-frame messages delivered
  uint64_t dropped = 0;     // multi-frame messages and encrypted commands dropped
  uint64_t queue_full = 0;  // messages refused because kMaxQueued were waiting
};

struct CurveKeys {
  unsigned char public_key[crypto_box_PUBLICKEYBYTES];  // C
  unsigned char secret_key[crypto_box_SECRETKEYBYTES];  // c
  unsigned char server_key[crypto_box_PUBLICKEYBYTES];  // S
};

class CurveDealer {
 public:
  static constexpr size_t kMaxQueued = 1000;  // libzmq's default send HWM
  using OnMessage = std::function<void(std::string_view)>;
  using OnLost = std::function<void()>;

  // `key` is the epoll user data of this dealer's socket in `epfd`.
  CurveDealer(int epfd, uint64_t key, const sockaddr_in& peer, const CurveKeys& keys, size_t max_msg,
              int reconnect_ivl_ms, int reconnect_ivl_max_ms, CurveDealerCounters* counters, uint64_t seed);
  ~CurveDealer();
  CurveDealer(const CurveDealer&) = delete;
  CurveDealer& operator=(const CurveDealer&) = delete;

  // Opens a connection now (no-op while one is open); from then on lost connections reopen.
  void open();
  // Closes the connection and stops reconnecting; wipes the session keys.
  void close();
  // Queues one single-frame message: written at once when READY, else when READY arrives.
  // False when kMaxQueued messages already wait.
  bool send(std::string_view body);
  // Reopens a lost connection once its backoff has passed; closes a connection that has not
  // reached READY within the handshake timeout (30 s, as libzmq's ZMQ_HANDSHAKE_IVL).
  void poll_reconnect(int64_t now_ms);
  // Handles the epoll events of this dealer's socket. The callbacks may call send().
  void on_events(uint32_t events, const OnMessage& on_message, const OnLost& on_lost);

  bool is_open() const { return conn_.is_open(); }
  bool ready() const { return state_ == State::ready; }

 private:
  enum class State { closed, connecting, greeting, welcome, initiated, ready };

  void lose(bool malformed, const OnLost* on_lost);  // closes and schedules a reconnect
  void wipe();
  // 0: more input needed or handled, 1: malformed, 2: refused (ERROR)
  int parse(const OnMessage& on_message);
  int on_frame(uint8_t flags, std::string_view body, const OnMessage& on_message);
  void write_message(std::string_view body);

  ZmtpConn conn_;  // socket, buffers, frames, libzmq's reconnect backoff
  CurveKeys keys_;
  size_t max_msg_;
  CurveDealerCounters* c_;
  State state_ = State::closed;
  bool in_callback_ = false;
  bool in_multipart_ = false;
  std::deque<std::string> queued_;
  // This connection's CurveZMQ state.
  unsigned char cn_public_[crypto_box_PUBLICKEYBYTES], cn_secret_[crypto_box_SECRETKEYBYTES];
  unsigned char cn_server_[crypto_box_PUBLICKEYBYTES], precom_[crypto_box_BEFORENMBYTES];
  uint64_t nonce_ = 1, peer_nonce_ = 0;
};

}  // namespace gantry::bench
