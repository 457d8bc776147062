#include "coordinator/http/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/util/log.h"

namespace gantry::coordinator {

HttpServer::HttpServer(std::string address, Handler handler) : address_(std::move(address)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  auto colon = address_.rfind(':');
  if (colon == std::string::npos) return make_error("config", "http address must be HOST:PORT, got " + address_);
  std::string host = address_.substr(0, colon);
  // 0..65535 (0: any free port); htons would silently wrap 99999 to 34463.
  const std::string port_text = address_.substr(colon + 1);
  int port = -1;
  if (!port_text.empty() && port_text.size() <= 5 && port_text.find_first_not_of("0123456789") == std::string::npos)
    port = std::stoi(port_text);
  if (port < 0 || port > 65535) return make_error("config", "bad port in http address " + address_ + " (want 0..65535)");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) return make_error("config", "http address must be an IPv4 address: " + host);
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

void HttpServer::loop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    serve(fd);
    ::close(fd);
  }
}

void HttpServer::serve(int fd) {
  // Read the request head (bounded: 8 KiB, 2 s).
  std::string req;
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) return;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.append(buf, static_cast<size_t>(n));
  }
  HttpResponse resp;
  auto sp1 = req.find(' ');
  auto sp2 = sp1 == std::string::npos ? sp1 : req.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) {
    resp = {400, "text/plain", "bad request\n"};
  } else if (req.compare(0, sp1, "GET") != 0) {
    resp = {405, "text/plain", "only GET\n"};
  } else {
    std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
    auto q = path.find('?');
    if (q != std::string::npos) path.resize(q);
    resp = handler_(path);
  }
  const char* reason = resp.status == 200 ? "OK" : resp.status == 404 ? "Not Found" : "Error";
  std::string head = "HTTP/1.1 " + std::to_string(resp.status) + " " + reason +
                     "\r\nContent-Type: " + resp.content_type +
                     "\r\nContent-Length: " + std::to_string(resp.body.size()) +
                     "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
  std::string all = head + resp.body;
  size_t off = 0;
  while (off < all.size()) {
    ssize_t n = ::send(fd, all.data() + off, all.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

}  // namespace gantry::coordinator
