// The raw ZMTP 3.0 + CURVE dealer of the reconnect-storm benchmark: see zmtp_curve_dealer.h.
#include "bench/zmtp_curve_dealer.h"

#include <netinet/tcp.h>
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
constexpr size_t kZero = crypto_box_ZEROBYTES, kBoxZero = crypto_box_BOXZEROBYTES;  // 32, 16
constexpr int64_t kHandshakeTimeoutMs = 30000;

void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<unsigned char>(v & 0xFF);
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}
const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

std::string greeting() {
  std::string g(64, '\0');
  g[0] = static_cast<char>(0xFF);
  g[9] = 0x7F;
  g[10] = 3;  // version 3.0
  std::memcpy(&g[12], "CURVE", 5);
  return g;  // as-server (byte 32) 0
}

// INITIATE's metadata: Socket-Type = DEALER (name-size, name, value-size BE32, value).
std::string metadata() {
  std::string m;
  m.push_back(11);
  m += "Socket-Type";
  m.append("\0\0\0\x06", 4);
  m += "DEALER";
  return m;
}

}  // namespace

CurveDealer::CurveDealer(int epfd, uint64_t key, const sockaddr_in& peer, const CurveKeys& keys, size_t max_msg,
                         int reconnect_ivl_ms, int reconnect_ivl_max_ms, CurveDealerCounters* counters, uint64_t seed)
    : epfd_(epfd),
      key_(key),
      peer_(peer),
      keys_(keys),
      max_msg_(max_msg),
      ivl_ms_(std::max(1, reconnect_ivl_ms)),
      ivl_max_ms_(std::max(reconnect_ivl_ms, reconnect_ivl_max_ms)),
      c_(counters),
      rng_(seed),
      backoff_ms_(ivl_ms_) {}

CurveDealer::~CurveDealer() {
  close();
  sodium_memzero(&keys_, sizeof keys_);
}

void CurveDealer::wipe() {
  sodium_memzero(cn_secret_, sizeof cn_secret_);
  sodium_memzero(precom_, sizeof precom_);
}

void CurveDealer::open() {
  if (fd_ >= 0) return;
  want_reconnect_ = true;
  c_->connects++;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    lose(false, nullptr);
    return;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as libzmq sets
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&peer_), sizeof peer_) != 0 && errno != EINPROGRESS) {
    lose(false, nullptr);
    return;
  }
  state_ = State::connecting;
  handshake_deadline_ = mono_ms() + kHandshakeTimeoutMs;
  in_.clear();
  in_pos_ = 0;
  in_multipart_ = false;
  // A new short-term key pair per connection, as libzmq's curve_client_t; nonces from 1.
  crypto_box_keypair(cn_public_, cn_secret_);
  nonce_ = 1;
  peer_nonce_ = 0;
  out_ = greeting();
  out_pos_ = 0;
  unsigned char hello[200] = {0};
  unsigned char n[crypto_box_NONCEBYTES];
  std::memcpy(n, "CurveZMQHELLO---", 16);
  put_u64(n + 16, nonce_++);
  unsigned char plain[kZero + 64] = {0}, box[kZero + 64];
  if (crypto_box(box, plain, sizeof plain, n, keys_.server_key, cn_secret_) != 0) {
    lose(true, nullptr);
    return;
  }
  std::memcpy(hello, "\x05HELLO\x01\x00", 8);  // 72 zero bytes of anti-amplification padding follow
  std::memcpy(hello + 80, cn_public_, 32);
  std::memcpy(hello + 112, n + 16, 8);
  std::memcpy(hello + 120, box + kBoxZero, 80);
  write_frame(kCommand, std::string_view(reinterpret_cast<const char*>(hello), sizeof hello));
  events_ = EPOLLIN | EPOLLOUT;
  epoll_event ev{};
  ev.events = events_;
  ev.data.u64 = key_;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd_, &ev) != 0) lose(false, nullptr);
}

void CurveDealer::close() {
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
  wipe();
}

void CurveDealer::lose(bool malformed, const OnLost* on_lost) {
  const bool was_ready = state_ == State::ready;
  if (malformed) c_->malformed++;
  else c_->lost++;
  close();
  want_reconnect_ = true;
  std::uniform_real_distribution<double> d(0.8, 1.2);
  reconnect_at_ = mono_ms() + std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(backoff_ms_) * d(rng_)));
  backoff_ms_ = std::min<int64_t>(backoff_ms_ * 2, ivl_max_ms_);
  if (was_ready && on_lost && *on_lost) (*on_lost)();
}

void CurveDealer::poll_reconnect(int64_t now_ms) {
  if (fd_ >= 0 && state_ != State::ready && now_ms >= handshake_deadline_) {
    lose(false, nullptr);
    return;
  }
  if (fd_ < 0 && want_reconnect_ && now_ms >= reconnect_at_) open();
}

void CurveDealer::write_frame(uint8_t flags, std::string_view body) {
  if (body.size() > 255) {
    out_.push_back(static_cast<char>(flags | kLong));
    for (int s = 56; s >= 0; s -= 8) out_.push_back(static_cast<char>((static_cast<uint64_t>(body.size()) >> s) & 0xFF));
  } else {
    out_.push_back(static_cast<char>(flags));
    out_.push_back(static_cast<char>(body.size()));
  }
  out_.append(body);
}

// A MESSAGE: "\x07MESSAGE", short nonce, Box[flags + body](C'->S') (libsodium's easy layout:
// MAC first, as libzmq's crypto_box_easy_afternm).
void CurveDealer::write_message(std::string_view body) {
  std::string plain(1 + body.size(), '\0');  // flags 0: one frame, not a command
  std::memcpy(plain.data() + 1, body.data(), body.size());
  unsigned char n[crypto_box_NONCEBYTES];
  std::memcpy(n, "CurveZMQMESSAGEC", 16);
  put_u64(n + 16, nonce_++);
  std::string msg(16 + crypto_box_MACBYTES + plain.size(), '\0');
  std::memcpy(msg.data(), "\x07MESSAGE", 8);
  std::memcpy(msg.data() + 8, n + 16, 8);
  crypto_box_easy_afternm(reinterpret_cast<unsigned char*>(msg.data()) + 16, bytes(plain), plain.size(), n, precom_);
  write_frame(0, msg);
}

bool CurveDealer::send(std::string_view body) {
  if (state_ != State::ready) {
    if (queued_.size() >= kMaxQueued) {
      c_->queue_full++;
      return false;
    }
    queued_.emplace_back(body);
    return true;
  }
  write_message(body);
  if (!in_callback_) {
    if (flush()) update_events();
  }
  return true;
}

bool CurveDealer::flush() {
  while (out_pos_ < out_.size()) {
    ssize_t n = ::send(fd_, out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL);
    if (n > 0) {
      out_pos_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    lose(false, nullptr);
    return false;
  }
  out_.clear();
  out_pos_ = 0;
  return true;
}

void CurveDealer::update_events() {
  if (fd_ < 0) return;
  uint32_t want = EPOLLIN | ((state_ == State::connecting || out_pos_ < out_.size()) ? EPOLLOUT : 0u);
  if (want == events_) return;
  events_ = want;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = key_;
  epoll_ctl(epfd_, EPOLL_CTL_MOD, fd_, &ev);
}

void CurveDealer::on_events(uint32_t events, const OnMessage& on_message, const OnLost& on_lost) {
  if (fd_ < 0) return;
  if (state_ == State::connecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      lose(false, &on_lost);
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
        in_.append(buf, static_cast<size_t>(n));
        in_callback_ = true;
        const int r = parse(on_message);
        in_callback_ = false;
        if (r == 2) {
          c_->refused++;
          lose(false, &on_lost);
          return;
        }
        if (r == 1) {
          lose(true, &on_lost);
          return;
        }
        if (fd_ < 0) return;
        if (static_cast<size_t>(n) < sizeof buf) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      lose(false, &on_lost);  // EOF or error
      return;
    }
  }
  if (fd_ >= 0 && out_pos_ < out_.size() && !flush()) return;
  update_events();
}

int CurveDealer::parse(const OnMessage& on_message) {
  auto u8 = [&](size_t at) { return static_cast<uint8_t>(in_[at]); };
  for (;;) {
    size_t avail = in_.size() - in_pos_;
    if (state_ == State::greeting) {
      if (avail < 64) break;
      static const char kCurve[20] = {'C', 'U', 'R', 'V', 'E'};
      if (u8(in_pos_) != 0xFF || (u8(in_pos_ + 9) & 1) == 0 || u8(in_pos_ + 10) < 3 ||
          std::memcmp(in_.data() + in_pos_ + 12, kCurve, 20) != 0)
        return 1;
      in_pos_ += 64;
      state_ = State::welcome;
      continue;
    }
    if (avail < 2) break;
    const uint8_t flags = u8(in_pos_);
    if (flags & ~(kMore | kLong | kCommand)) return 1;
    size_t hdr = 2, size = u8(in_pos_ + 1);
    if (flags & kLong) {
      if (avail < 9) break;
      hdr = 9;
      uint64_t s = 0;
      for (int i = 1; i <= 8; ++i) s = (s << 8) | u8(in_pos_ + i);
      if (s > max_msg_ + 64) return 1;
      size = static_cast<size_t>(s);
    }
    if (avail < hdr + size) break;
    std::string_view body(in_.data() + in_pos_ + hdr, size);
    in_pos_ += hdr + size;
    const int r = on_frame(flags, body, on_message);
    if (r != 0 || fd_ < 0) return r;
  }
  if (in_pos_ > 0 && (in_pos_ == in_.size() || in_pos_ > 65536)) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
  return 0;
}

int CurveDealer::on_frame(uint8_t flags, std::string_view body, const OnMessage& on_message) {
  const unsigned char* b = bytes(body);
  if (state_ == State::welcome || state_ == State::initiated) {
    if (!(flags & kCommand)) return 1;  // a message before READY
    if (body.size() >= 6 && std::memcmp(b, "\x05" "ERROR", 6) == 0) return 2;
  }
  if (state_ == State::welcome) {
    if (body.size() != 168 || std::memcmp(b, "\x07WELCOME", 8) != 0) return 1;
    unsigned char n[crypto_box_NONCEBYTES], box[kBoxZero + 144] = {0}, plain[kZero + 128];
    std::memcpy(n, "WELCOME-", 8);
    std::memcpy(n + 8, b + 8, 16);
    std::memcpy(box + kBoxZero, b + 24, 144);
    if (crypto_box_open(plain, box, sizeof box, n, keys_.server_key, cn_secret_) != 0) return 1;
    std::memcpy(cn_server_, plain + kZero, 32);
    unsigned char cookie[96];
    std::memcpy(cookie, plain + kZero + 32, 96);
    if (crypto_box_beforenm(precom_, cn_server_, cn_secret_) != 0) return 1;
    // vouch = Box[C' + S](C->S')
    unsigned char vn[crypto_box_NONCEBYTES], vplain[kZero + 64] = {0}, vbox[kZero + 64];
    std::memcpy(vn, "VOUCH---", 8);
    randombytes_buf(vn + 8, 16);
    std::memcpy(vplain + kZero, cn_public_, 32);
    std::memcpy(vplain + kZero + 32, keys_.server_key, 32);
    if (crypto_box(vbox, vplain, sizeof vplain, vn, cn_server_, keys_.secret_key) != 0) return 1;
    // Box[C + vouch + metadata](C'->S'), with the precomputed key.
    const std::string md = metadata();
    std::string iplain(kZero + 128 + md.size(), '\0'), ibox(iplain.size(), '\0');
    std::memcpy(iplain.data() + kZero, keys_.public_key, 32);
    std::memcpy(iplain.data() + kZero + 32, vn + 8, 16);
    std::memcpy(iplain.data() + kZero + 48, vbox + kBoxZero, 80);
    std::memcpy(iplain.data() + kZero + 128, md.data(), md.size());
    unsigned char in[crypto_box_NONCEBYTES];
    std::memcpy(in, "CurveZMQINITIATE", 16);
    put_u64(in + 16, nonce_++);
    crypto_box_afternm(reinterpret_cast<unsigned char*>(ibox.data()), bytes(iplain), iplain.size(), in, precom_);
    std::string initiate = "\x08INITIATE";
    initiate.append(reinterpret_cast<const char*>(cookie), 96);
    initiate.append(reinterpret_cast<const char*>(in + 16), 8);
    initiate.append(ibox, kBoxZero, std::string::npos);
    sodium_memzero(iplain.data(), iplain.size());
    write_frame(kCommand, initiate);
    state_ = State::initiated;
    return 0;
  }
  if (state_ == State::initiated) {
    if (body.size() < 14 + crypto_box_MACBYTES || std::memcmp(b, "\x05READY", 6) != 0) return 1;
    unsigned char n[crypto_box_NONCEBYTES];
    std::memcpy(n, "CurveZMQREADY---", 16);
    std::memcpy(n + 16, b + 6, 8);
    std::string box(kBoxZero, '\0'), plain;
    box.append(body.substr(14));
    plain.resize(box.size());
    if (crypto_box_open_afternm(reinterpret_cast<unsigned char*>(plain.data()), bytes(box), box.size(), n, precom_) != 0)
      return 1;
    peer_nonce_ = get_u64(b + 6);
    state_ = State::ready;
    c_->ready++;
    backoff_ms_ = ivl_ms_;
    while (!queued_.empty()) {
      write_message(queued_.front());
      queued_.pop_front();
    }
    return 0;
  }
  // READY: MESSAGE frames only (libzmq sends them as data frames).
  if (body.size() < 16 + crypto_box_MACBYTES + 1 || std::memcmp(b, "\x07MESSAGE", 8) != 0) return 1;
  const uint64_t nonce = get_u64(b + 8);
  if (nonce <= peer_nonce_) return 1;
  peer_nonce_ = nonce;
  unsigned char n[crypto_box_NONCEBYTES];
  std::memcpy(n, "CurveZMQMESSAGES", 16);
  put_u64(n + 16, nonce);
  std::string plain(body.size() - 16 - crypto_box_MACBYTES, '\0');
  if (crypto_box_open_easy_afternm(reinterpret_cast<unsigned char*>(plain.data()), b + 16, body.size() - 16, n, precom_) != 0)
    return 1;
  const uint8_t inner = static_cast<uint8_t>(plain[0]);
  const bool more = inner & 0x01, command = inner & 0x02;
  if (command) {
    c_->dropped++;  // PING and the like: this client never asks for them
    return 0;
  }
  if (in_multipart_ || more) {
    if (!in_multipart_) c_->dropped++;
    in_multipart_ = more;
    return 0;
  }
  c_->messages++;
  on_message(std::string_view(plain).substr(1));
  return 0;
}

}  // namespace gantry::bench
