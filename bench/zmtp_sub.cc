// The raw ZMTP 3.0 subscriber of the broadcast benchmark: see zmtp_sub.h.
#include "bench/zmtp_sub.h"

#include <strings.h>
#include <sys/epoll.h>

#include "bench/sim_common.h"

namespace gantry::bench {
namespace {

constexpr uint8_t kMore = ZmtpConn::kMore, kCommand = ZmtpConn::kCommand;

// READY with Socket-Type = SUB (RFC 23: command-name, then properties).
std::string ready_command() {
  std::string b;
  b.push_back(5);
  b += "READY";
  ZmtpConn::put_property(b, "Socket-Type", "SUB");
  return b;
}

}  // namespace

std::string ZmtpSub::greeting() { return ZmtpConn::greeting("NULL"); }

ZmtpSub::ZmtpSub(int epfd, uint64_t key, const sockaddr_in& peer, size_t max_msg, ZmtpCounters* counters, uint64_t seed)
    : conn_(epfd, key, peer, 100, 5000, seed), max_msg_(max_msg), c_(counters) {}

ZmtpSub::~ZmtpSub() { close(); }

void ZmtpSub::open() {
  if (conn_.is_open()) return;
  c_->connects++;
  state_ = State::connecting;
  in_multipart_ = false;
  if (!conn_.connect(handshake_timeout_ms_)) {
    lose(false);
    return;
  }
  conn_.out() = greeting();
  conn_.put_frame(kCommand, ready_command());  // the subscription follows the peer's READY
}

void ZmtpSub::close() {
  conn_.stop();
  conn_.close();
  state_ = State::closed;
}

void ZmtpSub::lose(bool malformed) {
  if (malformed)
    c_->malformed++;
  else
    c_->lost++;
  conn_.close();
  state_ = State::closed;
  conn_.schedule();
}

void ZmtpSub::poll_reconnect(int64_t now_ms) {
  if (state_ != State::ready && conn_.handshake_overdue(now_ms)) {
    c_->handshake_timeouts++;
    lose(false);
    return;
  }
  if (conn_.reconnect_due(now_ms)) open();
}

void ZmtpSub::on_events(uint32_t events, const OnMessage& on_message) {
  if (!conn_.is_open()) return;
  bool connecting = state_ == State::connecting;
  // parse: 1 malformed; 2 closed by the peer's ERROR or a failed PONG (lost already)
  const int r = conn_.pump(events, &connecting, [&] {
    if (state_ == State::connecting) state_ = State::greeting;
    if (!parse(wall_us(), on_message)) return 1;
    return conn_.is_open() ? 0 : 2;
  });
  if (state_ == State::connecting && !connecting) state_ = State::greeting;
  if (r == 1)
    lose(true);
  else if (r == -1)
    lose(false);  // the connect, a read or a write failed
}

bool ZmtpSub::parse(int64_t t_us, const OnMessage& on_message) {
  for (;;) {
    if (state_ == State::greeting) {
      const int g = conn_.take_greeting("NULL");
      if (g < 0) return false;
      if (g == 0) break;
      state_ = State::handshake;
      continue;
    }
    uint8_t flags = 0;
    std::string_view body;
    const int got = conn_.next_frame(max_msg_, &flags, &body);
    if (got < 0) return false;
    if (got == 0) break;
    if (flags & kCommand) {
      if (flags & kMore) return false;
      int r = on_command(body);
      if (r == 1) return false;
      if (r == 2 || !conn_.is_open()) {
        if (conn_.is_open()) lose(false);
        return true;
      }
      continue;
    }
    if (state_ != State::ready) return false;  // a message before the handshake
    if (flags & kMore) {
      in_multipart_ = true;
      continue;
    }
    if (in_multipart_) {  // the last frame of a multi-frame message: dropped whole
      in_multipart_ = false;
      c_->multipart_dropped++;
      continue;
    }
    c_->messages++;
    on_message(body, t_us);
    if (!conn_.is_open()) return true;  // the caller closed us
  }
  conn_.compact();
  return true;
}

int ZmtpSub::on_command(std::string_view body) {
  if (body.empty() || body.size() < 1u + static_cast<uint8_t>(body[0])) return 1;
  std::string_view name = body.substr(1, static_cast<uint8_t>(body[0]));
  std::string_view rest = body.substr(1 + name.size());
  if (name == "READY") {
    if (state_ != State::handshake) return 1;
    bool type_ok = false;
    while (!rest.empty()) {  // properties: name-size name value-size(4, big-endian) value
      size_t nlen = static_cast<uint8_t>(rest[0]);
      if (rest.size() < 1 + nlen + 4) return 1;
      std::string_view pname = rest.substr(1, nlen);
      uint32_t vlen = 0;
      for (size_t k = 0; k < 4; ++k) vlen = (vlen << 8) | static_cast<uint8_t>(rest[1 + nlen + k]);
      if (rest.size() < 1 + nlen + 4 + vlen) return 1;
      std::string_view value = rest.substr(1 + nlen + 4, vlen);
      if (pname.size() == 11 && strncasecmp(pname.data(), "Socket-Type", 11) == 0) {
        if (value != "PUB" && value != "XPUB") return 1;  // not a publisher: incompatible peer
        type_ok = true;
      }
      rest.remove_prefix(1 + nlen + 4 + vlen);
    }
    if (!type_ok) return 1;
    state_ = State::ready;
    conn_.reset_backoff();
    c_->ready++;
    // Only now: libzmq 4.3 treats a message that arrives before it has sent its own READY as a
    // handshake error and drops the connection (a greeting, READY and subscription in one
    // segment were refused that way).
    conn_.put_frame(0, std::string_view("\x01", 1));  // subscribe to every topic (ZMTP 3.0 form)
    if (!conn_.flush()) return 2;
    return 0;
  }
  if (state_ != State::ready) return 1;  // nothing but READY before the handshake is done
  if (name == "ERROR") return 2;
  if (name == "PING") {  // ZMTP 3.1: TTL (2 bytes), context (up to 16 bytes) -> PONG with the context
    if (rest.size() < 2 || rest.size() > 18) return 1;
    std::string pong;
    pong.push_back(4);
    pong += "PONG";
    pong.append(rest.substr(2));
    conn_.put_frame(kCommand, pong);
    c_->pings++;
    if (!conn_.flush()) return 2;
    return 0;
  }
  return 0;  // other commands (PONG, SUBSCRIBE, ...) are not ours to act on
}

}  // namespace gantry::bench
