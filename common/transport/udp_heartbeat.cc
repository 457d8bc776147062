#include "common/transport/udp_heartbeat.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/security/keys.h"
#include "common/transport/zmq_transport.h"

namespace gantry::transport::udp_hb {
namespace {

constexpr unsigned char kMagic[4] = {'G', 'H', 'B', 1};
constexpr unsigned char kMagicCoordinator[4] = {'G', 'H', 'C', 1};
const unsigned char* magic(From from) { return from == From::kAgent ? kMagic : kMagicCoordinator; }
constexpr std::size_t kMacBytes = 16;
constexpr std::size_t kSigned = kDatagramBytes - kMacBytes;

void put_be(unsigned char* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
}
uint64_t get_be(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

void mac(const unsigned char* data, std::string_view key, unsigned char out[kMacBytes]) {
  crypto_generichash(out, kMacBytes, data, kSigned, reinterpret_cast<const unsigned char*>(key.data()), key.size());
}

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

const char* reject_name(Reject r) {
  switch (r) {
    case Reject::kNone:
      return "none";
    case Reject::kSize:
      return "size";
    case Reject::kMagic:
      return "magic";
    case Reject::kUnknownSession:
      return "unknown_session";
    case Reject::kMac:
      return "mac";
    case Reject::kReplay:
      return "replay";
  }
  return "?";
}

Datagram seal(uint32_t session, uint64_t seq, std::string_view key, From from) {
  Datagram d{};
  std::memcpy(d.data(), magic(from), 4);
  put_be(d.data() + 4, session, 4);
  put_be(d.data() + 8, seq, 8);
  mac(d.data(), key, d.data() + kSigned);
  return d;
}

Reject parse(const unsigned char* data, std::size_t len, Header* h, From from) {
  if (len != kDatagramBytes) return Reject::kSize;
  if (std::memcmp(data, magic(from), 4) != 0) return Reject::kMagic;
  h->session = static_cast<uint32_t>(get_be(data + 4, 4));
  h->seq = get_be(data + 8, 8);
  if (h->session == 0 || h->seq == 0) return Reject::kMagic;
  return Reject::kNone;
}

bool authentic(const unsigned char* data, std::string_view key) {
  if (key.size() != kKeyBytes) return false;
  unsigned char want[kMacBytes];
  mac(data, key, want);
  return crypto_verify_16(want, data + kSigned) == 0;
}

std::string new_key() {
  security::init_sodium();
  std::string k(kKeyBytes, '\0');
  randombytes_buf(k.data(), k.size());
  return k;
}

// ---- Receiver ---------------------------------------------------------------------------

Receiver::~Receiver() {
  if (fd_ >= 0) ::close(fd_);
}

Status Receiver::bind(const std::string& host, uint16_t port) {
  security::init_sodium();
  sockaddr_storage ss{};
  socklen_t len = 0;
  const std::string h = host == "*" ? "0.0.0.0" : host;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof *v4;
  } else if (::inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof *v6;
  } else {
    return make_error("config", "UDP heartbeat address '" + host + "' is not an IP address");
  }
  int fd = ::socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error("io", "UDP socket: " + errno_text(errno));
  // 4 MiB (each queued datagram costs ~1 KiB of socket memory): a few seconds of 10,000 agents.
  // SO_RCVBUFFORCE passes net.core.rmem_max for a privileged process; else the capped size.
  int want = 4 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int e = errno;
    ::close(fd);
    return make_error("endpoint", "cannot bind UDP " + host + ":" + std::to_string(port) + ": " + errno_text(e));
  }
  sockaddr_storage got{};
  socklen_t glen = sizeof got;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &glen) == 0)
    port_ = ntohs(got.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&got)->sin_port
                                           : reinterpret_cast<sockaddr_in6*>(&got)->sin6_port);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  return Status::Ok();
}

int Receiver::read_batch() {
  if (fd_ < 0) return 0;
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  sockaddr_storage from[kBatch];
  for (int i = 0; i < kBatch; ++i) {
    iov[i] = {bufs_[static_cast<std::size_t>(i)].data(), bufs_[static_cast<std::size_t>(i)].size()};
    std::memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
  }
  int n = ::recvmmsg(fd_, msgs, kBatch, MSG_DONTWAIT, nullptr);
  if (n <= 0) return 0;
  for (int i = 0; i < n; ++i) {
    Peer& p = peers_[static_cast<std::size_t>(i)];
    const socklen_t flen = msgs[i].msg_hdr.msg_namelen;
    p.len = flen <= p.addr.size() ? static_cast<uint8_t>(flen) : 0;
    if (p.len) std::memcpy(p.addr.data(), &from[i], p.len);
    // A datagram longer than the buffer is cut (MSG_TRUNC): report a size that fails parse().
    lens_[static_cast<std::size_t>(i)] =
        (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? bufs_[0].size() + 1 : msgs[i].msg_len;
  }
  return n;
}

Status Receiver::send_to(const Datagram& d, const Peer& peer) {
  if (fd_ < 0 || peer.len == 0) return make_error("io", "no UDP socket or no peer address");
  if (::sendto(fd_, d.data(), d.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(peer.addr.data()), peer.len) !=
      static_cast<ssize_t>(d.size()))
    return make_error("io", "UDP heartbeat send: " + errno_text(errno));
  return Status::Ok();
}

// ---- Sender -----------------------------------------------------------------------------

Sender::~Sender() { close(); }

void Sender::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Status Sender::open(const std::string& endpoint, uint16_t udp_port) {
  security::init_sodium();
  close();
  const auto hp = tcp_host_port(endpoint);
  if (!hp) return make_error("config", "endpoint '" + endpoint + "' is not tcp://HOST:PORT");
  const std::string& host = hp->host;
  const bool v6_literal = hp->ipv6_literal;
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  // As libzmq resolves the connection's host (ZMQ_IPV6 off): a name is looked up as IPv4, so
  // "localhost" means 127.0.0.1 for the datagrams too, not the ::1 the connection never uses.
  hints.ai_family = v6_literal ? AF_INET6 : AF_INET;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(udp_port);
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return make_error("resolve", "cannot resolve " + host + " for UDP heartbeats: " + ::gai_strerror(rc));
  Status st = make_error("io", "no address of " + host + " accepted a UDP socket");
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      fd_ = fd;
      st = Status::Ok();
      break;
    }
    st = make_error("io", "UDP connect to " + host + ":" + port + ": " + errno_text(errno));
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return st;
}

uint64_t Sender::receive(uint32_t session, uint64_t last_seq, std::string_view key, uint64_t* rejected) {
  uint64_t best = 0;
  unsigned char buf[64];
  for (int i = 0; i < 64 && fd_ >= 0; ++i) {  // bounded: the coordinator sends one per period
    const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) break;  // EAGAIN, or an ICMP error (ECONNREFUSED) reported on this socket
    Header h;
    if (parse(buf, static_cast<std::size_t>(n), &h, From::kCoordinator) != Reject::kNone || h.session != session ||
        !authentic(buf, key) || h.seq <= std::max(last_seq, best)) {
      if (rejected) ++*rejected;
      continue;
    }
    best = h.seq;
  }
  return best;
}

Status Sender::send(uint32_t session, uint64_t seq, std::string_view key) {
  if (fd_ < 0) return make_error("io", "UDP heartbeat socket not open");
  Datagram d = seal(session, seq, key);
  if (::send(fd_, d.data(), d.size(), MSG_DONTWAIT) != static_cast<ssize_t>(d.size()))
    return make_error("io", "UDP heartbeat send: " + errno_text(errno));
  return Status::Ok();
}

}  // namespace gantry::transport::udp_hb
