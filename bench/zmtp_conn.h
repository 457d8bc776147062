// The plumbing the benchmarks' raw ZMTP 3.0 clients share (zmtp_sub.h, the broadcast's
// subscriber; zmtp_curve_dealer.h, the storm's CURVE dealer): one non-blocking TCP socket in the
// simulator's epoll set, its input and output buffers, ZMTP frames in and out, and libzmq's
// reconnect rule (jittered backoff doubling from reconnect_ivl to reconnect_ivl_max, reset by
// the caller once its handshake is done). The protocol above the frames is the caller's.
#pragma once

#include <netinet/in.h>
#include <sys/epoll.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

namespace gantry::bench {

class ZmtpConn {
 public:
  static constexpr uint8_t kMore = 0x01, kLong = 0x02, kCommand = 0x04;

  // `key` is the epoll user data of the socket in `epfd`.
  ZmtpConn(int epfd, uint64_t key, const sockaddr_in& peer, int reconnect_ivl_ms, int reconnect_ivl_max_ms,
           uint64_t seed);
  ~ZmtpConn() { close(); }
  ZmtpConn(const ZmtpConn&) = delete;
  ZmtpConn& operator=(const ZmtpConn&) = delete;

  // A new non-blocking connection, registered for EPOLLIN | EPOLLOUT, buffers emptied, the
  // handshake due within `handshake_timeout_ms`. False when it failed at once (the caller loses it).
  bool connect(int64_t handshake_timeout_ms);
  // Closes the socket and empties the buffers (no reconnect is scheduled).
  void close();
  bool is_open() const { return fd_ >= 0; }

  // Reconnecting: from the first connect() on, want() is true until stop(); schedule() sets the
  // next attempt after the jittered backoff and doubles it; reset_backoff() after a handshake.
  void schedule();
  void stop() { want_ = false; }
  void reset_backoff() { backoff_ms_ = ivl_ms_; }
  bool reconnect_due(int64_t now_ms) const { return fd_ < 0 && want_ && now_ms >= reconnect_at_; }
  bool handshake_overdue(int64_t now_ms) const { return fd_ >= 0 && now_ms >= handshake_deadline_; }

  // One epoll wakeup of the socket: completes a pending connect (`*connecting` cleared once it
  // succeeded), writes pending output, reads (at most 16 times; level-triggered epoll brings us
  // back) calling `parse()` after each read, writes what parse queued and updates the epoll mask.
  // parse() returns 0 to go on or a code of its own (> 0) that ends the wakeup. Returns 0, that
  // code, or -1 when the connection failed (connect error, EOF, a failed read or write); on a
  // non-zero result the caller closes or loses the connection. A wakeup of a connecting socket
  // without EPOLLOUT/ERR/HUP does nothing.
  template <typename Parse>
  int pump(uint32_t events, bool* connecting, Parse&& parse);

  // On the first events of a connecting socket: true when the connect succeeded.
  bool connect_succeeded(uint32_t events) const;
  // Writes what is pending; false when the connection failed.
  bool flush();
  // EPOLLIN, plus EPOLLOUT while `connecting` or output is pending.
  void update_events(bool connecting);
  // One read into the input buffer: >0 bytes read, 0 nothing now, -1 EOF or error.
  long read_some();

  // The 64-byte ZMTP 3.0 greeting of a client (as-server 0) speaking `mechanism` ("NULL", "CURVE").
  static std::string greeting(std::string_view mechanism);
  // The peer's greeting at the front of the input: 1 (checked and consumed: signature, major
  // version >= 3, `mechanism`), 0 (more input needed), -1 (not such a greeting).
  int take_greeting(std::string_view mechanism);

  // Output: a ZMTP frame (short or long form).
  void put_frame(uint8_t flags, std::string_view body) { put_frame(out_, flags, body); }
  static void put_frame(std::string& out, uint8_t flags, std::string_view body);
  // A metadata property (READY, INITIATE): name-size, name, value-size (4 bytes, big-endian), value.
  static void put_property(std::string& out, std::string_view name, std::string_view value);
  std::string& out() { return out_; }
  bool output_pending() const { return out_pos_ < out_.size(); }

  // Input: the unparsed bytes; take(n) consumes n of them.
  std::string_view input() const { return std::string_view(in_).substr(in_pos_); }
  void take(size_t n) { in_pos_ += n; }
  // The next whole frame: 1 (flags and body set; consumed), 0 (more input needed), -1 (malformed:
  // reserved flag bits, or a body over `max_body`).
  int next_frame(size_t max_body, uint8_t* flags, std::string_view* body);
  // Drops consumed input (call once the frames of a read are handled).
  void compact();

 private:
  int epfd_;
  uint64_t key_;
  sockaddr_in peer_;
  int64_t ivl_ms_, ivl_max_ms_, backoff_ms_;
  std::mt19937_64 rng_;
  int fd_ = -1;
  bool want_ = false;
  int64_t reconnect_at_ = 0, handshake_deadline_ = 0;
  uint32_t events_ = 0;  // the mask registered in epfd_
  std::string in_, out_;
  size_t in_pos_ = 0, out_pos_ = 0;
};

template <typename Parse>
int ZmtpConn::pump(uint32_t events, bool* connecting, Parse&& parse) {
  if (fd_ < 0) return -1;
  if (*connecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return 0;
    if (!connect_succeeded(events)) return -1;
    *connecting = false;
  }
  if (output_pending() && !flush()) return -1;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    for (int k = 0; k < 16; ++k) {
      const long n = read_some();
      if (n == 0) break;
      if (n < 0) return -1;
      if (const int r = parse(); r != 0) return r;
      if (fd_ < 0) return -1;
      if (n < 16384) break;
    }
  }
  if (output_pending() && !flush()) return -1;
  update_events(false);
  return 0;
}

}  // namespace gantry::bench
