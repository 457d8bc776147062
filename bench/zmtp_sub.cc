// The raw ZMTP 3.0 subscriber of the broadcast benchmark: see zmtp_sub.h.
#include "bench/zmtp_sub.h"

#include <netinet/tcp.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "bench/sim_common.h"

namespace gantry::bench {
namespace {

constexpr uint8_t kMore = 0x01, kLong = 0x02, kCommand = 0x04;

void put_frame(std::string& out, uint8_t flags, std::string_view body) {
  if (body.size() > 255) {
    out.push_back(static_cast<char>(flags | kLong));
    for (int s = 56; s >= 0; s -= 8) out.push_back(static_cast<char>((static_cast<uint64_t>(body.size()) >> s) & 0xFF));
  } else {
    out.push_back(static_cast<char>(flags));
    out.push_back(static_cast<char>(body.size()));
  }
  out.append(body);
}

// READY with Socket-Type = SUB (RFC 23: command-name, then name-size name value-size(4) value).
std::string ready_command() {
  std::string b;
  b.push_back(5);
  b += "READY";
  b.push_back(11);
  b += "Socket-Type";
  b.append("\0\0\0\x03", 4);
  b += "SUB";
  return b;
}

}  // namespace

std::string ZmtpSub::greeting() {
  std::string g(64, '\0');
  g[0] = static_cast<char>(0xFF);
  g[9] = 0x7F;
  g[10] = 3;  // version 3.0
  g[11] = 0;
  std::memcpy(&g[12], "NULL", 4);
  g[32] = 0;  // as-server: no (NULL ignores it)
  return g;
}

ZmtpSub::ZmtpSub(int epfd, uint64_t key, const sockaddr_in& peer, size_t max_msg, ZmtpCounters* counters, uint64_t seed)
    : epfd_(epfd), key_(key), peer_(peer), max_msg_(max_msg), c_(counters), rng_(seed) {}

ZmtpSub::~ZmtpSub() { close(); }

void ZmtpSub::open() {
  if (fd_ >= 0) return;
  want_reconnect_ = true;  // from now on, a lost connection is reopened
  c_->connects++;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    lose(false);
    return;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as libzmq sets
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&peer_), sizeof peer_) != 0 && errno != EINPROGRESS) {
    lose(false);
    return;
  }
  state_ = State::connecting;
  handshake_deadline_ = mono_ms() + handshake_timeout_ms_;
  in_.clear();
  in_pos_ = 0;
  in_multipart_ = false;
  out_ = greeting();
  put_frame(out_, kCommand, ready_command());  // the subscription follows the peer's READY
  out_pos_ = 0;
  events_ = EPOLLIN | EPOLLOUT;
  epoll_event ev{};
  ev.events = events_;
  ev.data.u64 = key_;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd_, &ev) != 0) lose(false);
}

void ZmtpSub::close() {
  want_reconnect_ = false;
  if (fd_ >= 0) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, fd_, nullptr);
    ::close(fd_);
  }
  fd_ = -1;
  state_ = State::closed;
  in_.clear();
  out_.clear();
  in_pos_ = out_pos_ = 0;
}

void ZmtpSub::lose(bool malformed) {
  if (malformed) c_->malformed++;
  else c_->lost++;
  close();
  want_reconnect_ = true;
  std::uniform_real_distribution<double> d(0.8, 1.2);
  reconnect_at_ = mono_ms() + std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(backoff_ms_) * d(rng_)));
  backoff_ms_ = std::min<int64_t>(backoff_ms_ * 2, 5000);
}

void ZmtpSub::poll_reconnect(int64_t now_ms) {
  if (fd_ >= 0 && state_ != State::ready && now_ms >= handshake_deadline_) {
    c_->handshake_timeouts++;
    lose(false);
    return;
  }
  if (fd_ < 0 && want_reconnect_ && now_ms >= reconnect_at_) open();
}

bool ZmtpSub::flush() {
  while (out_pos_ < out_.size()) {
    ssize_t n = ::send(fd_, out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL);
    if (n > 0) {
      out_pos_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    lose(false);
    return false;
  }
  out_.clear();
  out_pos_ = 0;
  return true;
}

void ZmtpSub::update_events() {
  if (fd_ < 0) return;
  uint32_t want = EPOLLIN | ((state_ == State::connecting || out_pos_ < out_.size()) ? EPOLLOUT : 0u);
  if (want == events_) return;
  events_ = want;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = key_;
  epoll_ctl(epfd_, EPOLL_CTL_MOD, fd_, &ev);
}

void ZmtpSub::on_events(uint32_t events, const OnMessage& on_message) {
  if (fd_ < 0) return;
  if (state_ == State::connecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      lose(false);
      return;
    }
    state_ = State::greeting;
  }
  if (out_pos_ < out_.size() && !flush()) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    char buf[16384];
    for (int k = 0; k < 16; ++k) {  // bounded per wakeup; level-triggered epoll brings us back
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n > 0) {
        int64_t t = wall_us();
        in_.append(buf, static_cast<size_t>(n));
        if (!parse(t, on_message)) {
          lose(true);
          return;
        }
        if (fd_ < 0) return;  // closed by the peer's ERROR or a failed PONG
        if (static_cast<size_t>(n) < sizeof buf) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      lose(false);  // EOF or error
      return;
    }
  }
  update_events();
}

bool ZmtpSub::parse(int64_t t_us, const OnMessage& on_message) {
  auto u8 = [&](size_t at) { return static_cast<uint8_t>(in_[at]); };
  for (;;) {
    size_t avail = in_.size() - in_pos_;
    if (state_ == State::greeting) {
      if (avail < 64) break;
      const char* g = in_.data() + in_pos_;
      static const char kNull[20] = {'N', 'U', 'L', 'L'};
      if (u8(in_pos_) != 0xFF || (u8(in_pos_ + 9) & 1) == 0 || u8(in_pos_ + 10) < 3 || std::memcmp(g + 12, kNull, 20) != 0)
        return false;
      in_pos_ += 64;
      state_ = State::handshake;
      continue;
    }
    if (avail < 2) break;
    uint8_t flags = u8(in_pos_);
    if (flags & 0xF8) return false;
    size_t head = (flags & kLong) ? 9 : 2;
    if (avail < head) break;
    uint64_t size = 0;
    if (flags & kLong) {
      for (size_t k = 1; k < 9; ++k) size = (size << 8) | u8(in_pos_ + k);
    } else {
      size = u8(in_pos_ + 1);
    }
    if (size > max_msg_) return false;
    if (avail < head + size) break;
    std::string_view body(in_.data() + in_pos_ + head, static_cast<size_t>(size));
    in_pos_ += head + static_cast<size_t>(size);
    if (flags & kCommand) {
      if (flags & kMore) return false;
      int r = on_command(body);
      if (r == 1) return false;
      if (r == 2 || fd_ < 0) {
        if (fd_ >= 0) lose(false);
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
    if (fd_ < 0) return true;  // the caller closed us
  }
  if (in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
  } else if (in_pos_ > 65536) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
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
    backoff_ms_ = 100;
    c_->ready++;
    // Only now: libzmq 4.3 treats a message that arrives before it has sent its own READY as a
    // handshake error and drops the connection (a greeting, READY and subscription in one
    // segment were refused that way).
    put_frame(out_, 0, std::string_view("\x01", 1));  // subscribe to every topic (ZMTP 3.0 form)
    if (!flush()) return 2;
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
    put_frame(out_, kCommand, pong);
    c_->pings++;
    if (!flush()) return 2;
    return 0;
  }
  return 0;  // other commands (PONG, SUBSCRIBE, ...) are not ours to act on
}

}  // namespace gantry::bench
