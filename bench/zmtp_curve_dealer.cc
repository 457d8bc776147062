// The raw ZMTP 3.0 + CURVE dealer of the reconnect-storm benchmark: see zmtp_curve_dealer.h.
#include "bench/zmtp_curve_dealer.h"

#include <cstring>

namespace gantry::bench {
namespace {

constexpr uint8_t kCommand = ZmtpConn::kCommand;
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

// INITIATE's metadata: Socket-Type = DEALER.
std::string metadata() {
  std::string m;
  ZmtpConn::put_property(m, "Socket-Type", "DEALER");
  return m;
}

}  // namespace

CurveDealer::CurveDealer(int epfd, uint64_t key, const sockaddr_in& peer, const CurveKeys& keys, size_t max_msg,
                         int reconnect_ivl_ms, int reconnect_ivl_max_ms, CurveDealerCounters* counters, uint64_t seed)
    : conn_(epfd, key, peer, reconnect_ivl_ms, reconnect_ivl_max_ms, seed),
      keys_(keys),
      max_msg_(max_msg),
      c_(counters) {}

CurveDealer::~CurveDealer() {
  close();
  sodium_memzero(&keys_, sizeof keys_);
}

void CurveDealer::wipe() {
  sodium_memzero(cn_secret_, sizeof cn_secret_);
  sodium_memzero(precom_, sizeof precom_);
}

void CurveDealer::open() {
  if (conn_.is_open()) return;
  c_->connects++;
  state_ = State::connecting;
  in_multipart_ = false;
  if (!conn_.connect(kHandshakeTimeoutMs)) {
    lose(false, nullptr);
    return;
  }
  // A new short-term key pair per connection, as libzmq's curve_client_t; nonces from 1.
  crypto_box_keypair(cn_public_, cn_secret_);
  nonce_ = 1;
  peer_nonce_ = 0;
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
  conn_.out() = ZmtpConn::greeting("CURVE");
  conn_.put_frame(kCommand, std::string_view(reinterpret_cast<const char*>(hello), sizeof hello));
}

void CurveDealer::close() {
  conn_.stop();
  conn_.close();
  state_ = State::closed;
  wipe();
}

void CurveDealer::lose(bool malformed, const OnLost* on_lost) {
  const bool was_ready = state_ == State::ready;
  if (malformed)
    c_->malformed++;
  else
    c_->lost++;
  conn_.close();
  state_ = State::closed;
  wipe();
  conn_.schedule();
  if (was_ready && on_lost && *on_lost) (*on_lost)();
}

void CurveDealer::poll_reconnect(int64_t now_ms) {
  if (state_ != State::ready && conn_.handshake_overdue(now_ms)) {
    lose(false, nullptr);
    return;
  }
  if (conn_.reconnect_due(now_ms)) open();
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
  conn_.put_frame(0, msg);
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
    // A failed write leaves the output pending: the socket's next wakeup (EPOLLOUT, ERR or HUP)
    // finds it in on_events, which loses the connection and tells the caller.
    (void)conn_.flush();
    conn_.update_events(false);
  }
  return true;
}

void CurveDealer::on_events(uint32_t events, const OnMessage& on_message, const OnLost& on_lost) {
  if (!conn_.is_open()) return;
  bool connecting = state_ == State::connecting;
  const int r = conn_.pump(events, &connecting, [&] {
    if (state_ == State::connecting) state_ = State::greeting;
    in_callback_ = true;
    const int p = parse(on_message);  // 1 malformed, 2 refused (ERROR)
    in_callback_ = false;
    return p;
  });
  if (state_ == State::connecting && !connecting) state_ = State::greeting;
  if (r == 2) c_->refused++;
  if (r != 0) lose(r == 1, &on_lost);  // malformed, refused, or the connect, a read or a write failed
}

int CurveDealer::parse(const OnMessage& on_message) {
  for (;;) {
    if (state_ == State::greeting) {
      const int g = conn_.take_greeting("CURVE");
      if (g < 0) return 1;
      if (g == 0) break;
      state_ = State::welcome;
      continue;
    }
    uint8_t flags = 0;
    std::string_view body;
    const int got = conn_.next_frame(max_msg_ + 64, &flags, &body);
    if (got < 0) return 1;
    if (got == 0) break;
    const int r = on_frame(flags, body, on_message);
    if (r != 0 || !conn_.is_open()) return r;
  }
  conn_.compact();
  return 0;
}

int CurveDealer::on_frame(uint8_t flags, std::string_view body, const OnMessage& on_message) {
  const unsigned char* b = bytes(body);
  if (state_ == State::welcome || state_ == State::initiated) {
    if (!(flags & kCommand)) return 1;  // a message before READY
    if (body.size() >= 6 && std::memcmp(b,
                                        "\x05"
                                        "ERROR",
                                        6) == 0)
      return 2;
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
    conn_.put_frame(kCommand, initiate);
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
    if (crypto_box_open_afternm(reinterpret_cast<unsigned char*>(plain.data()), bytes(box), box.size(), n, precom_) !=
        0)
      return 1;
    peer_nonce_ = get_u64(b + 6);
    state_ = State::ready;
    c_->ready++;
    conn_.reset_backoff();
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
  if (crypto_box_open_easy_afternm(reinterpret_cast<unsigned char*>(plain.data()), b + 16, body.size() - 16, n,
                                   precom_) != 0)
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
