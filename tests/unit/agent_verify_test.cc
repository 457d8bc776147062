#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <thread>

#include "agent/core/verifier.h"
#include "agent/probe/probe.h"

using namespace gantry;
using namespace gantry::agent;

namespace {

// A probe answering from a script: one entry per check, the last one repeats.
class ScriptedProbe : public Probe {
 public:
  explicit ScriptedProbe(std::deque<bool> script) : script_(std::move(script)) {}
  std::string describe() const override { return "scripted"; }
  Status check(Millis) override {
    bool ok = script_.front();
    if (script_.size() > 1) script_.pop_front();
    ++calls;
    if (ok) return Status::Ok();
    return make_error("probe", "scripted returned 500");
  }
  int calls = 0;

 private:
  std::deque<bool> script_;
};

// A listening TCP socket on 127.0.0.1:<ephemeral>.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Listener() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Serves one HTTP request with a canned response on a thread.
void serve_once(int listen_fd, std::string response) {
  int c = ::accept(listen_fd, nullptr, nullptr);
  if (c < 0) return;
  char buf[2048];
  (void)!::recv(c, buf, sizeof buf, 0);
  (void)!::send(c, response.data(), response.size(), MSG_NOSIGNAL);
  ::close(c);
}

}  // namespace

TEST(AgentVerifier, HealthyAfterContinuousStreak) {
  FakeClock clock;
  auto p = std::make_shared<ScriptedProbe>(std::deque<bool>{true});
  Verifier v(clock, [&](Millis ms) { clock.advance(ms); });
  VerifyResult r = v.run({p}, {100, 1000, 5000});
  EXPECT_TRUE(r.healthy);
  EXPECT_EQ(p->calls, 11);  // t=0,100,...,1000
}

TEST(AgentVerifier, FailureResetsTheStreak) {
  FakeClock clock;
  // healthy 500 ms, one failure, then healthy: needs a fresh 1000 ms streak.
  std::deque<bool> s(6, true);
  s.push_back(false);
  s.push_back(true);
  auto p = std::make_shared<ScriptedProbe>(s);
  Verifier v(clock, [&](Millis ms) { clock.advance(ms); });
  Millis start = clock.now_ms();
  VerifyResult r = v.run({p}, {100, 1000, 5000});
  EXPECT_TRUE(r.healthy);
  EXPECT_EQ(clock.now_ms() - start, 1700);
}

TEST(AgentVerifier, StartingServiceIsRetriedSoonerThanTheInterval) {
  FakeClock clock;
  // Not listening for the first three rounds: retried after 10, 20, 40 ms, not 250 ms each.
  auto p = std::make_shared<ScriptedProbe>(std::deque<bool>{false, false, false, true});
  Verifier v(clock, [&](Millis ms) { clock.advance(ms); });
  Millis start = clock.now_ms();
  VerifyResult r = v.run({p}, {250, 0, 5000});
  EXPECT_TRUE(r.healthy);
  EXPECT_EQ(clock.now_ms() - start, 70);
  EXPECT_EQ(p->calls, 4);
}

TEST(AgentVerifier, DeadlineGivesAReadableMessage) {
  FakeClock clock;
  auto p = std::make_shared<ScriptedProbe>(std::deque<bool>{false});
  Verifier v(clock, [&](Millis ms) { clock.advance(ms); });
  Millis start = clock.now_ms();
  VerifyResult r = v.run({p}, {250, 2000, 3000});
  EXPECT_FALSE(r.healthy);
  EXPECT_EQ(clock.now_ms() - start, 3000);
  EXPECT_EQ(r.message, "verification failed: scripted returned 500 (healthy 0 ms of 2000 ms needed)");
}

TEST(AgentProbe, TcpProbeAgainstARealListener) {
  Listener l;
  TcpProbe p("127.0.0.1:" + std::to_string(l.port()));
  EXPECT_TRUE(p.check(500).ok());
  l.close();
  Status st = p.check(500);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("tcp://127.0.0.1:"), std::string::npos);
}

TEST(AgentProbe, HttpProbeStatusAndBody) {
  Listener l;
  std::string url = "http://127.0.0.1:" + std::to_string(l.port()) + "/health";
  {
    std::thread t(serve_once, l.fd(), "HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nversion=2");
    EXPECT_TRUE(HttpProbe(url, "version=2").check(2000).ok());
    t.join();
  }
  {
    std::thread t(serve_once, l.fd(), "HTTP/1.0 200 OK\r\n\r\nversion=1");
    Status st = HttpProbe(url, "version=2").check(2000);
    t.join();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("does not contain"), std::string::npos);
  }
  {
    std::thread t(serve_once, l.fd(), "HTTP/1.1 500 Internal Server Error\r\n\r\n");
    Status st = HttpProbe(url).check(2000);
    t.join();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().message, url + " returned 500");
  }
  l.close();
  EXPECT_FALSE(HttpProbe(url).check(500).ok());
  EXPECT_FALSE(HttpProbe::validate("https://x/").ok());
  EXPECT_FALSE(TcpProbe::validate("nohost").ok());
}
