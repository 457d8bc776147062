#include "agent/probe/probe.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/util/names.h"
#include "common/util/text.h"

namespace gantry::agent {
namespace {

struct HostPort {
  std::string host, port;
};

Expected<HostPort> split_host_port(const std::string& s, const std::string& default_port) {
  HostPort hp;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find(']');
    if (close == std::string::npos) return make_error("config", "bad address " + s);
    hp.host = s.substr(1, close - 1);
    std::string rest = s.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return make_error("config", "bad address " + s);
    hp.port = rest.empty() ? default_port : rest.substr(1);
  } else {
    auto colon = s.rfind(':');
    hp.host = colon == std::string::npos ? s : s.substr(0, colon);
    hp.port = colon == std::string::npos ? default_port : s.substr(colon + 1);
  }
  if (hp.host.empty() || parse_port(hp.port).value_or(0) == 0) return make_error("config", "bad host:port '" + s + "'");
  return hp;
}

struct UrlParts {
  std::string host, port, path;
};

Expected<UrlParts> parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return make_error("config", "probe URL must start with http:// : " + url);
  std::string rest = url.substr(scheme.size());
  auto slash = rest.find('/');
  std::string authority = slash == std::string::npos ? rest : rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  for (char c : path)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
      return make_error("config", "bad character in probe URL " + url);
  auto hp = split_host_port(authority, "80");
  if (!hp) return hp.error();
  return UrlParts{hp->host, hp->port, path};
}

class Socket {
 public:
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }

  // Non-blocking connect bounded by the deadline.
  Status connect(const std::string& host, const std::string& port, const SystemClock& clock, Millis deadline) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    addrinfo* res = nullptr;
    int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) return make_error("probe", "cannot resolve " + host + ": " + gai_strerror(rc));
    std::string last = "no address";
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        Millis left = deadline - clock.now_ms();
        int n = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
        int err = 0;
        socklen_t len = sizeof err;
        if (n == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
          fd_ = fd;
          ::freeaddrinfo(res);
          return Status::Ok();
        }
        last = n == 0 ? "timed out" : std::strerror(err ? err : errno);
      } else {
        last = std::strerror(errno);
      }
      ::close(fd);
    }
    ::freeaddrinfo(res);
    return make_error("probe", "connect failed: " + last);
  }

 private:
  int fd_ = -1;
};

}  // namespace

HttpProbe::HttpProbe(std::string url, std::string expect) : url_(std::move(url)), expect_(std::move(expect)) {
  auto u = parse_url(url_);
  if (u) {
    host_ = u->host;
    port_ = u->port;
    path_ = u->path;
    valid_ = true;
  }
}

Status HttpProbe::validate(const std::string& url) {
  auto u = parse_url(url);
  if (!u) return u.error();
  return Status::Ok();
}

Status HttpProbe::check(Millis timeout_ms) {
  if (!valid_) return make_error("probe", url_ + " is not a valid http URL");
  SystemClock clock;
  Millis deadline = clock.now_ms() + timeout_ms;
  Socket s;
  if (Status st = s.connect(host_, port_, clock, deadline); !st.ok())
    return make_error("probe", url_ + " " + st.error().message);
  std::string req =
      "GET " + path_ + " HTTP/1.0\r\nHost: " + host_ + "\r\nUser-Agent: gantry-agent\r\nConnection: close\r\n\r\n";
  size_t off = 0;
  while (off < req.size()) {
    pollfd p{s.fd(), POLLOUT, 0};
    Millis left = deadline - clock.now_ms();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1)
      return make_error("probe", url_ + " timed out sending the request");
    ssize_t n = ::send(s.fd(), req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return make_error("probe", url_ + " send failed: " + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  std::string resp;
  constexpr size_t kMaxResponse = 64 * 1024;
  char buf[4096];
  for (;;) {
    pollfd p{s.fd(), POLLIN, 0};
    Millis left = deadline - clock.now_ms();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1) {
      if (resp.find("\r\n") != std::string::npos && expect_.empty()) break;  // status line is enough
      return make_error("probe", url_ + " timed out waiting for the response");
    }
    ssize_t n = ::recv(s.fd(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return make_error("probe", url_ + " read failed: " + std::strerror(errno));
    }
    if (n == 0) break;
    resp.append(buf, static_cast<size_t>(n));
    if (resp.size() >= kMaxResponse) break;
  }
  // "HTTP/1.x NNN reason"
  auto sp = resp.find(' ');
  if (resp.rfind("HTTP/", 0) != 0 || sp == std::string::npos || resp.size() < sp + 4)
    return make_error("probe", url_ + " returned a malformed response");
  std::string code = resp.substr(sp + 1, 3);
  if (code != "200") return make_error("probe", url_ + " returned " + safe_text(code, 16));  // a peer's bytes
  if (!expect_.empty()) {
    auto body = resp.find("\r\n\r\n");
    std::string b = body == std::string::npos ? std::string() : resp.substr(body + 4);
    if (b.find(expect_) == std::string::npos)
      return make_error("probe", url_ + " body does not contain '" + expect_ + "'");
  }
  return Status::Ok();
}

TcpProbe::TcpProbe(std::string host_port) {
  auto hp = split_host_port(host_port, "");
  if (hp) {
    host_ = hp->host;
    port_ = hp->port;
    valid_ = true;
  } else {
    host_ = host_port;
  }
}

Status TcpProbe::validate(const std::string& host_port) {
  auto hp = split_host_port(host_port, "");
  if (!hp) return hp.error();
  return Status::Ok();
}

Status TcpProbe::check(Millis timeout_ms) {
  if (!valid_) return make_error("probe", host_ + " is not a valid host:port");
  SystemClock clock;
  Socket s;
  if (Status st = s.connect(host_, port_, clock, clock.now_ms() + timeout_ms); !st.ok())
    return make_error("probe", describe() + " " + st.error().message);
  return Status::Ok();
}

}  // namespace gantry::agent
