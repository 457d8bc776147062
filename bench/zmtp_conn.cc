// The raw ZMTP clients' shared plumbing: see zmtp_conn.h.
#include "bench/zmtp_conn.h"

#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "bench/sim_common.h"

namespace gantry::bench {

ZmtpConn::ZmtpConn(int epfd, uint64_t key, const sockaddr_in& peer, int reconnect_ivl_ms, int reconnect_ivl_max_ms,
                   uint64_t seed)
    : epfd_(epfd),
      key_(key),
      peer_(peer),
      ivl_ms_(std::max(1, reconnect_ivl_ms)),
      ivl_max_ms_(std::max(reconnect_ivl_ms, reconnect_ivl_max_ms)),
      backoff_ms_(ivl_ms_),
      rng_(seed) {}

bool ZmtpConn::connect(int64_t handshake_timeout_ms) {
  if (fd_ >= 0) return true;
  want_ = true;
  in_.clear();
  out_.clear();
  in_pos_ = out_pos_ = 0;
  handshake_deadline_ = mono_ms() + handshake_timeout_ms;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as libzmq sets
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&peer_), sizeof peer_) != 0 && errno != EINPROGRESS)
    return false;
  events_ = EPOLLIN | EPOLLOUT;
  epoll_event ev{};
  ev.events = events_;
  ev.data.u64 = key_;
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd_, &ev) == 0;
}

void ZmtpConn::close() {
  if (fd_ >= 0) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, fd_, nullptr);
    ::close(fd_);
  }
  fd_ = -1;
  in_.clear();
  out_.clear();
  in_pos_ = out_pos_ = 0;
}

void ZmtpConn::schedule() {
  want_ = true;
  std::uniform_real_distribution<double> d(0.8, 1.2);
  reconnect_at_ = mono_ms() + std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(backoff_ms_) * d(rng_)));
  backoff_ms_ = std::min<int64_t>(backoff_ms_ * 2, ivl_max_ms_);
}

bool ZmtpConn::connect_succeeded(uint32_t events) const {
  if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return false;
  int err = 0;
  socklen_t len = sizeof err;
  return getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

bool ZmtpConn::flush() {
  while (out_pos_ < out_.size()) {
    ssize_t n = ::send(fd_, out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL);
    if (n > 0) {
      out_pos_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
  out_.clear();
  out_pos_ = 0;
  return true;
}

void ZmtpConn::update_events(bool connecting) {
  if (fd_ < 0) return;
  uint32_t want = EPOLLIN | ((connecting || out_pos_ < out_.size()) ? EPOLLOUT : 0u);
  if (want == events_) return;
  events_ = want;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = key_;
  epoll_ctl(epfd_, EPOLL_CTL_MOD, fd_, &ev);
}

long ZmtpConn::read_some() {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
      return n;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return -1;  // EOF or error
  }
}

std::string ZmtpConn::greeting(std::string_view mechanism) {
  std::string g(64, '\0');
  g[0] = static_cast<char>(0xFF);
  g[9] = 0x7F;
  g[10] = 3;                                   // version 3.0
  g.replace(12, mechanism.size(), mechanism);  // 20 bytes, zero-padded; as-server (byte 32) 0
  return g;
}

int ZmtpConn::take_greeting(std::string_view mechanism) {
  std::string_view g = input();
  if (g.size() < 64) return 0;
  char want[20] = {};
  std::memcpy(want, mechanism.data(), std::min<size_t>(mechanism.size(), sizeof want));
  if (static_cast<uint8_t>(g[0]) != 0xFF || (static_cast<uint8_t>(g[9]) & 1) == 0 || static_cast<uint8_t>(g[10]) < 3 ||
      std::memcmp(g.data() + 12, want, sizeof want) != 0)
    return -1;
  take(64);
  return 1;
}

void ZmtpConn::put_frame(std::string& out, uint8_t flags, std::string_view body) {
  if (body.size() > 255) {
    out.push_back(static_cast<char>(flags | kLong));
    for (int s = 56; s >= 0; s -= 8) out.push_back(static_cast<char>((static_cast<uint64_t>(body.size()) >> s) & 0xFF));
  } else {
    out.push_back(static_cast<char>(flags));
    out.push_back(static_cast<char>(body.size()));
  }
  out.append(body);
}

void ZmtpConn::put_property(std::string& out, std::string_view name, std::string_view value) {
  out.push_back(static_cast<char>(name.size()));
  out.append(name);
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((value.size() >> s) & 0xFF));
  out.append(value);
}

int ZmtpConn::next_frame(size_t max_body, uint8_t* flags, std::string_view* body) {
  std::string_view in = input();
  if (in.size() < 2) return 0;
  const uint8_t f = static_cast<uint8_t>(in[0]);
  if (f & ~(kMore | kLong | kCommand)) return -1;
  const size_t head = (f & kLong) ? 9 : 2;
  if (in.size() < head) return 0;
  uint64_t size = 0;
  if (f & kLong) {
    for (size_t k = 1; k < 9; ++k) size = (size << 8) | static_cast<uint8_t>(in[k]);
  } else {
    size = static_cast<uint8_t>(in[1]);
  }
  if (size > max_body) return -1;
  if (in.size() < head + size) return 0;
  *flags = f;
  *body = in.substr(head, static_cast<size_t>(size));
  in_pos_ += head + static_cast<size_t>(size);
  return 1;
}

void ZmtpConn::compact() {
  if (in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
  } else if (in_pos_ > 65536) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
}

}  // namespace gantry::bench
