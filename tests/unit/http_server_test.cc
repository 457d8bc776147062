// The coordinator's HTTP endpoint over real loopback sockets (IPv4 and IPv6, port 0): it serves
// paths, answers only to its own Host names, and clients that stall or crowd in cannot keep
// another client from its answer nor make the server grow past its bounds.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "common/transport/zmq_transport.h"
#include "coordinator/http/host_allowlist.h"
#include "coordinator/http/http_server.h"

namespace gantry::coordinator {
namespace {

// A connected TCP socket to "IPV4:PORT" or "[IPV6]:PORT"; -1 on failure. Receives time out after
// 30 s so a broken server fails the test instead of hanging it.
int connect_to(const std::string& address) {
  auto hp = transport::split_host_port(address);
  if (!hp) return -1;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (hp->ipv6_literal) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(std::stoi(hp->port)));
    if (inet_pton(AF_INET6, hp->host.c_str(), &a->sin6_addr) != 1) return -1;
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(std::stoi(hp->port)));
    if (inet_pton(AF_INET, hp->host.c_str(), &a->sin_addr) != 1) return -1;
    len = sizeof *a;
  }
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Everything the server sends until it closes the connection.
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string round_trip(const std::string& address, const std::string& request) {
  const int fd = connect_to(address);
  if (fd < 0) return "connect failed";
  send_all(fd, request);
  std::string out = read_all(fd);
  ::close(fd);
  return out;
}

std::string get(const std::string& address, const std::string& target, const std::string& host) {
  return round_trip(address, "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n");
}

int status_of(const std::string& response) {
  // "HTTP/1.1 200 OK"
  if (response.size() < 12 || response.compare(0, 5, "HTTP/") != 0) return -1;
  return std::atoi(response.c_str() + 9);
}

std::string body_of(const std::string& response) {
  const auto p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

std::string port_of(const std::string& address) { return address.substr(address.rfind(':') + 1); }

size_t threads_in_process() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

HttpServer::RequestHandler echo_handler() {
  return [](const HttpRequest& r) {
    if (r.path == "/missing") return HttpResponse{404, "text/plain", "not found\n"};
    std::string body = "path=" + r.path;
    for (const auto& [k, v] : r.params) body += " " + k + "=" + v;
    return HttpResponse{200, "text/plain; charset=utf-8", body + "\n"};
  };
}

class HttpServerOnLoopback : public ::testing::TestWithParam<std::string> {};

TEST_P(HttpServerOnLoopback, ServesPathsAndQueryOnAnyFreePort) {
  HttpServer srv(GetParam(), echo_handler());
  ASSERT_TRUE(srv.start().ok());
  const std::string addr = srv.bound_address();
  ASSERT_NE(port_of(addr), "0");
  EXPECT_EQ(addr.substr(0, addr.rfind(':')), GetParam().substr(0, GetParam().rfind(':')));

  const std::string r = get(addr, "/status?service=web&x=a%20b", "localhost:" + port_of(addr));
  EXPECT_EQ(status_of(r), 200) << r;
  EXPECT_EQ(body_of(r), "path=/status service=web x=a b\n");
  EXPECT_NE(r.find("Content-Security-Policy: default-src 'none'"), std::string::npos) << r;
  EXPECT_NE(r.find("Cache-Control: no-store"), std::string::npos) << r;
  EXPECT_EQ(status_of(get(addr, "/missing", addr)), 404);

  // HEAD answers the headers only; anything else than GET or HEAD is refused (read-only).
  const std::string head = round_trip(addr, "HEAD /metrics HTTP/1.1\r\nHost: " + addr + "\r\n\r\n");
  EXPECT_EQ(status_of(head), 200) << head;
  EXPECT_EQ(body_of(head), "");
  const std::string post =
      round_trip(addr, "POST /status HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 2\r\n\r\nhi");
  EXPECT_EQ(status_of(post), 405) << post;
  srv.stop();
}

TEST_P(HttpServerOnLoopback, OldHandlerSignatureSeesThePathWithoutQuery) {
  HttpServer srv(GetParam(), HttpServer::Handler([](const std::string& path) {
                   return HttpResponse{200, "text/plain", "got " + path};
                 }));
  ASSERT_TRUE(srv.start().ok());
  EXPECT_EQ(body_of(get(srv.bound_address(), "/metrics?a=1", srv.bound_address())), "got /metrics");
}

INSTANTIATE_TEST_SUITE_P(Ipv4AndIpv6, HttpServerOnLoopback, ::testing::Values("127.0.0.1:0", "[::1]:0"),
                         [](const auto& info) { return info.index == 0 ? std::string("Ipv4") : std::string("Ipv6"); });

TEST(HttpServer, RefusesBadAddressesAndOptions) {
  EXPECT_FALSE(HttpServer("localhost:80", echo_handler()).start().ok());  // a name, not an address
  EXPECT_FALSE(HttpServer("::1:0", echo_handler()).start().ok());         // IPv6 without brackets
  EXPECT_FALSE(HttpServer("127.0.0.1:99999", echo_handler()).start().ok());
  EXPECT_FALSE(HttpServer("127.0.0.1", echo_handler()).start().ok());
  HttpOptions bad_name;
  bad_name.allowed_hosts = {"evil.example:80"};
  EXPECT_FALSE(HttpServer("127.0.0.1:0", echo_handler(), bad_name).start().ok());
  HttpServer first("127.0.0.1:0", echo_handler());
  ASSERT_TRUE(first.start().ok());
  EXPECT_FALSE(HttpServer(first.bound_address(), echo_handler()).start().ok()) << "port taken: no SO_REUSEPORT sharing";
}

TEST(HttpServer, AnswersOnlyToItsOwnHostNames) {
  HttpOptions o;
  o.allowed_hosts = {"Coordinator.Example.Internal"};
  HttpServer srv("127.0.0.1:0", echo_handler(), o);
  ASSERT_TRUE(srv.start().ok());
  const std::string addr = srv.bound_address();
  const std::string port = port_of(addr);
  for (const std::string& host :
       std::vector<std::string>{"localhost", "localhost:" + port, "LOCALHOST.", "127.0.0.1", addr, "[::1]",
                                "[::1]:" + port, "coordinator.example.internal:" + port, "10.1.2.3:7680"}) {
    EXPECT_EQ(status_of(get(addr, "/status", host)), 200) << host;
  }
  EXPECT_EQ(srv.refused_host(), 0u);
  // What a DNS-rebinding page sends: its own name, with or without the port.
  for (const std::string& host :
       std::vector<std::string>{"evil.example", "evil.example:" + port, "localhost.evil.example", "[::1",
                                "127.0.0.1:notaport", "exa mple"}) {
    const std::string r = get(addr, "/status", host);
    EXPECT_EQ(status_of(r), 421) << host << "\n" << r;
    EXPECT_EQ(body_of(r).find("path="), std::string::npos);
  }
  EXPECT_EQ(srv.refused_host(), 6u);
  // HTTP/1.1 must name a Host; HTTP/1.0 may omit it (not a browser, so not a rebinding page).
  EXPECT_EQ(status_of(round_trip(addr, "GET /status HTTP/1.1\r\n\r\n")), 400);
  EXPECT_EQ(status_of(round_trip(addr, "GET /status HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n")), 400);
  EXPECT_EQ(status_of(round_trip(addr, "GET /status HTTP/1.0\r\n\r\n")), 200);
  EXPECT_EQ(status_of(round_trip(addr, "GET /status HTTP/1.0\r\nHost: evil.example\r\n\r\n")), 421);
}

TEST(HttpServer, StalledClientsDoNotKeepOthersFromTheirAnswer) {
  HttpOptions o;
  o.threads = 2;
  o.head_timeout_ms = 60000;  // the stalled clients hold what they take for the whole test
  o.connection_timeout_ms = 60000;
  HttpServer srv("[::1]:0", echo_handler(), o);
  ASSERT_TRUE(srv.start().ok());
  const std::string addr = srv.bound_address();
  // One connects and never sends; one sends half a request head and stops.
  const int silent = connect_to(addr);
  const int half = connect_to(addr);
  ASSERT_GE(silent, 0);
  ASSERT_GE(half, 0);
  ASSERT_TRUE(send_all(half, "GET /status HTTP/1.1\r\nHost: localh"));
  for (int i = 0; i < 5; ++i) {
    const std::string r = get(addr, "/status", "localhost");
    EXPECT_EQ(status_of(r), 200) << r;
    EXPECT_EQ(body_of(r), "path=/status\n");
  }
  // The stalled one finishes and is answered too.
  ASSERT_TRUE(send_all(half, "ost\r\n\r\n"));
  EXPECT_EQ(status_of(read_all(half)), 200);
  ::close(silent);
  ::close(half);
}

TEST(HttpServer, ARequestHeadPastTheLimitIsRefusedNotBuffered) {
  HttpServer srv("127.0.0.1:0", echo_handler());
  ASSERT_TRUE(srv.start().ok());
  const std::string addr = srv.bound_address();
  // Headers without end (cpp-httplib alone would keep every line): 1 MiB, refused at 16 KiB.
  std::string flood = "GET /status HTTP/1.1\r\nHost: localhost\r\n";
  while (flood.size() < (1u << 20)) flood += "X-Filler: " + std::string(100, 'a') + "\r\n";
  const int fd = connect_to(addr);
  ASSERT_GE(fd, 0);
  send_all(fd, flood);  // the server may close before it has all of it
  const std::string r = read_all(fd);
  ::close(fd);
  EXPECT_EQ(status_of(r), 431) << r.substr(0, 200);
  // One endless line: the same.
  const std::string line = "GET /" + std::string(1u << 20, 'a') + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const std::string r2 = round_trip(addr, line);
  EXPECT_EQ(status_of(r2), 431) << r2.substr(0, 200);
  EXPECT_EQ(status_of(get(addr, "/status", "localhost")), 200);
}

TEST(HttpServer, ManyConnectionsAreBoundedAndTheOldestWaitingMakesRoom) {
  HttpOptions o;
  o.threads = 2;
  o.queue = 4;
  o.head_timeout_ms = 60000;  // the stalled clients hold what they take for the whole test
  o.connection_timeout_ms = 60000;
  const size_t threads_before = threads_in_process();
  HttpServer srv("127.0.0.1:0", echo_handler(), o);
  ASSERT_TRUE(srv.start().ok());
  const std::string addr = srv.bound_address();
  // 40 clients each send half a head and stall: at most 2 are being read and 4 wait; each one
  // past that pushes the oldest waiting out with a 503.
  std::vector<int> stalled;
  for (int i = 0; i < 40; ++i) {
    const int fd = connect_to(addr);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "GET / HTTP/1.1\r\n"));
    stalled.push_back(fd);
  }
  // Wait for the shed ones' answers (no time limit here: ctest's).
  std::vector<int> answered;
  for (;;) {
    answered.clear();
    for (int fd : stalled) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) == 1) answered.push_back(fd);
    }
    if (srv.shed() >= 34 && answered.size() == srv.shed()) break;
    ::usleep(1000);
  }
  EXPECT_LE(srv.shed(), 38u);
  for (int fd : answered) {
    const std::string r = read_all(fd);
    EXPECT_EQ(status_of(r), 503) << r;
  }
  // The newest are still in line (not answered), not the oldest waiting.
  for (size_t i = stalled.size() - 4; i < stalled.size(); ++i) {
    EXPECT_EQ(std::count(answered.begin(), answered.end(), stalled[i]), 0) << "client " << i;
  }
  // Threads: the pool and the accepting thread, whatever the number of connections.
  EXPECT_LE(threads_in_process(), threads_before + o.threads + 1);
  // A newcomer behind the crowd gets in line (the newest connection is never the one dropped)
  // and is answered once the stalled clients go away.
  std::string answer;
  std::thread newcomer([&] { answer = get(addr, "/status", "localhost"); });
  for (int fd : stalled) ::close(fd);
  newcomer.join();
  EXPECT_EQ(status_of(answer), 200) << answer;
  EXPECT_EQ(status_of(get(addr, "/status", "localhost")), 200);
  srv.stop();
}

// The coordinator holds one descriptor per agent connection, so at 10,000 agents every HTTP
// connection's descriptor is above FD_SETSIZE (1024): select() would overflow there, poll() not.
TEST(HttpServer, ServesConnectionsWhoseDescriptorIsAboveFdSetSize) {
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_cur < 1200) {
    if (lim.rlim_max < 1200) GTEST_SKIP() << "RLIMIT_NOFILE below 1200";
    rlimit more = lim;
    more.rlim_cur = 1200;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &more), 0);
  }
  std::vector<int> filler;
  while (filler.empty() || filler.back() < 1100) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    filler.push_back(fd);
  }
  HttpServer srv("127.0.0.1:0", echo_handler());
  ASSERT_TRUE(srv.start().ok());
  const std::string r = get(srv.bound_address(), "/status", "localhost");
  EXPECT_EQ(status_of(r), 200) << r;
  EXPECT_EQ(body_of(r), "path=/status\n");
  srv.stop();
  for (int fd : filler) ::close(fd);
  if (lim.rlim_cur < 1200) ::setrlimit(RLIMIT_NOFILE, &lim);
}

TEST(HttpServer, StopsWithClientsStillConnected) {
  HttpOptions o;
  o.head_timeout_ms = 60000;
  o.connection_timeout_ms = 60000;
  auto srv = std::make_unique<HttpServer>("127.0.0.1:0", echo_handler(), o);
  ASSERT_TRUE(srv->start().ok());
  const int fd = connect_to(srv->bound_address());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "GET / HTTP/1.1\r\n"));
  srv.reset();  // must not wait for the client's 60 s
  EXPECT_EQ(read_all(fd), "");
  ::close(fd);
}

TEST(HostAllowlist, LocalhostIpLiteralsAndConfiguredNames) {
  auto a = HostAllowlist::make({"gantry.example.org", "Mon.Example."});
  ASSERT_TRUE(a.ok());
  for (const char* ok : {"localhost", "LocalHost:7680", "localhost.", "127.0.0.1", "127.0.0.1:7680", "192.0.2.7:80",
                         "[::1]", "[::1]:7680", "[2001:db8::1]:443", "gantry.example.org", "GANTRY.example.org:7680",
                         "mon.example", "mon.example.:1"}) {
    EXPECT_TRUE(a->allows(ok)) << ok;
  }
  for (const char* bad : {"", "evil.example", "gantry.example.org.evil.example", "localhost:", "localhost:99999",
                          "localhost:7680:1", "::1", "[::1", "[::1]x", "[evil]", "[::1]:80:80", "127.0.0.1:x",
                          "local host", "localhost\r\nX: y", "xn--lcalhost-.example", ":7680"}) {
    EXPECT_FALSE(a->allows(bad)) << bad;
  }
  EXPECT_FALSE(HostAllowlist::make({"with space"}).ok());
  EXPECT_FALSE(HostAllowlist::make({"name:80"}).ok());
  EXPECT_FALSE(HostAllowlist::make({"-lead.example"}).ok());
  EXPECT_FALSE(HostAllowlist::make({""}).ok());
}

}  // namespace
}  // namespace gantry::coordinator
