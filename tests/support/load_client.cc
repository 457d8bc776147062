#include "tests/support/load_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace gantry::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxSamples = 10;
constexpr size_t kMaxAnswer = 64 * 1024;

std::string version_of(const std::string& body) {
  std::string v;
  auto p = body.find("version=");
  if (p != std::string::npos) {
    p += 8;
    while (p < body.size() && body[p] != ' ' && body[p] != '\n') v += body[p++];
    return v;
  }
  for (char c : body)
    if (c != '\n' && c != '\r') v += c;
  return v.substr(0, 64);
}

// One GET over a fresh connection. Returns the status (0 on error, with `error` set).
int get(int port, const std::string& path, int timeout_ms, std::string& body, std::string& error) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return 0;
  }
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return 0;
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    error = std::string("send: ") + std::strerror(errno);
    ::close(fd);
    return 0;
  }
  std::string ans;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      ans.append(buf, static_cast<size_t>(n));
      if (ans.size() > kMaxAnswer) break;
      continue;
    }
    if (n < 0 && errno == EINTR && Clock::now() < deadline) continue;
    if (n < 0) {
      error = std::string("recv: ") + std::strerror(errno);
      ::close(fd);
      return 0;
    }
    break;
  }
  ::close(fd);
  // "HTTP/1.x NNN ..."
  if (ans.size() < 12 || ans.compare(0, 7, "HTTP/1.") != 0) {
    error = ans.empty() ? "connection closed without an answer" : "malformed answer";
    return 0;
  }
  int status = std::atoi(ans.substr(9, 3).c_str());
  auto he = ans.find("\r\n\r\n");
  body = he == std::string::npos ? "" : ans.substr(he + 4);
  return status;
}

}  // namespace

std::string LoadCounts::summary() const {
  std::string s = "requests=" + std::to_string(requests) + " failed=" + std::to_string(failed()) + " (non-2xx " +
                  std::to_string(non_2xx) + ", errors " + std::to_string(errors) + ")";
  for (const auto& [v, n] : by_version) s += " " + v + "=" + std::to_string(n);
  return s;
}

LoadClient::LoadClient(int port, std::string path, int rate, int threads, int timeout_ms)
    : port_(port), path_(std::move(path)), rate_(rate), threads_(threads), timeout_ms_(timeout_ms) {}

LoadClient::~LoadClient() { (void)stop(); }

void LoadClient::start() {
  stop_ = false;
  for (int i = 0; i < threads_; ++i) senders_.emplace_back([this, i] { sender(i); });
}

LoadCounts LoadClient::take() {
  std::lock_guard lk(mu_);
  LoadCounts c = std::move(counts_);
  counts_ = LoadCounts{};
  return c;
}

LoadCounts LoadClient::stop() {
  stop_ = true;
  for (auto& t : senders_) t.join();
  senders_.clear();
  return take();
}

void LoadClient::record(int status, const std::string& body, const std::string& error) {
  std::lock_guard lk(mu_);
  ++counts_.requests;
  if (status >= 200 && status < 300) {
    ++counts_.ok;
    ++counts_.by_version[version_of(body)];
    return;
  }
  if (status == 0)
    ++counts_.errors;
  else
    ++counts_.non_2xx;
  if (counts_.samples.size() < kMaxSamples)
    counts_.samples.push_back(status ? "HTTP " + std::to_string(status) + ": " + version_of(body) : error);
}

void LoadClient::sender(int index) {
  // Each sender sends rate/threads requests per second, the senders spread over the interval.
  const auto interval = std::chrono::microseconds(1000000LL * threads_ / std::max(1, rate_));
  auto next = Clock::now() + interval * index / threads_;
  while (!stop_) {
    auto now = Clock::now();
    if (now < next) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
      ::poll(nullptr, 0, static_cast<int>(std::min<long long>(left + 1, 50)));
      continue;
    }
    next += interval;
    if (next < now - interval * 10) next = now;  // fell far behind: do not burst to catch up
    std::string body, error;
    int status = get(port_, path_, timeout_ms_, body, error);
    record(status, body, error);
  }
}

}  // namespace gantry::testing
