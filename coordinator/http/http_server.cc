#include "coordinator/http/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "common/util/log.h"
#include "common/util/names.h"

namespace gantry::coordinator {

HttpServer::HttpServer(std::string address, Handler handler) : address_(std::move(address)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  auto colon = address_.rfind(':');
  if (colon == std::string::npos) return make_error("config", "http address must be HOST:PORT, got " + address_);
  std::string host = address_.substr(0, colon);
  // 0..65535 (0: any free port); htons would silently wrap 99999 to 34463.
  const std::optional<int> port = parse_port(address_.substr(colon + 1));
  if (!port) return make_error("config", "bad port in http address " + address_ + " (want 0..65535)");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(*port));
  if (::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) return make_error("config", "http address must be an IPv4 address: " + host);
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);  // accepted in a loop until EAGAIN
  if (listen_fd_ < 0) return make_error("io", std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(listen_fd_, 64) != 0) {
    int e = errno;
    ::close(listen_fd_);
    listen_fd_ = -1;
    return make_error("io", "listen on " + address_ + ": " + std::strerror(e));
  }
  socklen_t len = sizeof sa;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  bound_ = host + ":" + std::to_string(ntohs(sa.sin_port));
  thread_ = std::thread([this] { loop(); });
  return Status::Ok();
}

void HttpServer::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

struct HttpServer::Conn {
  int fd = -1;
  int64_t deadline_ms = 0;
  std::string in;   // the request head, until complete
  std::string out;  // the answer, once built
  size_t sent = 0;
};

namespace {
int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void HttpServer::loop() {
  std::vector<Conn> conns;
  std::vector<pollfd> pfds;
  auto drop = [&](size_t i) {
    ::close(conns[i].fd);
    conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
  };
  while (!stop_) {
    pfds.clear();
    pfds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& c : conns) pfds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
    if (::poll(pfds.data(), pfds.size(), 100) < 0 && errno != EINTR) continue;
    const int64_t now = now_ms();
    // Connections first (pfds[i + 1] is conns[i]); closed ones are collected, then erased.
    std::vector<bool> done(conns.size(), false);
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      const short ev = pfds[i + 1].revents;
      if (now >= c.deadline_ms || (ev & (POLLERR | POLLNVAL))) {
        done[i] = true;
        continue;
      }
      if (c.out.empty() && (ev & (POLLIN | POLLHUP))) {
        char buf[2048];
        ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          done[i] = true;
          continue;
        }
        if (n > 0) c.in.append(buf, static_cast<size_t>(n));
        if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() >= kMaxRequestHead) {
          HttpResponse resp = c.in.find("\r\n\r\n") == std::string::npos
                                  ? HttpResponse{431, "text/plain", "request head larger than 8 KiB\n"}
                                  : respond(c.in);
          const char* reason = resp.status == 200   ? "OK"
                               : resp.status == 400 ? "Bad Request"
                               : resp.status == 404 ? "Not Found"
                               : resp.status == 405 ? "Method Not Allowed"
                               : resp.status == 431 ? "Request Header Fields Too Large"
                               : resp.status == 503 ? "Service Unavailable"
                                                    : "Error";
          c.out = "HTTP/1.1 " + std::to_string(resp.status) + " " + reason + "\r\nContent-Type: " + resp.content_type +
                  "\r\nContent-Length: " + std::to_string(resp.body.size()) +
                  "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" + resp.body;
          c.in.clear();
        }
      } else if (!c.out.empty() && (ev & (POLLOUT | POLLHUP))) {
        ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR) done[i] = true;
        if (n > 0) c.sent += static_cast<size_t>(n);
        if (c.sent == c.out.size()) done[i] = true;
      }
    }
    for (size_t i = conns.size(); i-- > 0;)
      if (done[i]) drop(i);
    if (pfds[0].revents & POLLIN) {
      for (int k = 0; k < 64; ++k) {  // what the backlog holds now, bounded per turn
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        if (conns.size() >= kMaxConnections) {
          // Full: the oldest connection (the nearest deadline) makes room. Stalled clients hold
          // no slot for long, and a scraper arriving behind them is still served.
          size_t oldest = 0;
          for (size_t i = 1; i < conns.size(); ++i)
            if (conns[i].deadline_ms < conns[oldest].deadline_ms) oldest = i;
          drop(oldest);
          ++dropped_for_room_;
          if (now_ms() - last_full_log_ms_ >= 10000) {
            log::get("http")->warn("{} HTTP connections open (the most served at once); dropped the oldest, {} so far",
                                   kMaxConnections, dropped_for_room_);
            last_full_log_ms_ = now_ms();
          }
        }
        conns.push_back(Conn{fd, now_ms() + kConnectionDeadlineMs, {}, {}, 0});
      }
    }
  }
  for (auto& c : conns) ::close(c.fd);
}

HttpResponse HttpServer::respond(const std::string& req) {
  auto sp1 = req.find(' ');
  auto sp2 = sp1 == std::string::npos ? sp1 : req.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) return {400, "text/plain", "bad request\n"};
  if (req.compare(0, sp1, "GET") != 0) return {405, "text/plain", "only GET\n"};
  std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
  auto q = path.find('?');
  if (q != std::string::npos) path.resize(q);
  return handler_(path);
}

}  // namespace gantry::coordinator
