// The raw ZMTP subscriber of the benchmarks against peers that misbehave: one that accepts and
// never answers (handshake timeout, then a reconnect) and one that answers with garbage
// (malformed, closed). Real sockets on loopback; every loop bounded.
#include "bench/zmtp_sub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "bench/sim_common.h"

using namespace gantry::bench;

namespace {

struct Listener {
  int fd = -1;
  sockaddr_in addr{};
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd, 16), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  }
  ~Listener() { ::close(fd); }
};

struct Loop {
  int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  ~Loop() { ::close(epfd); }
  // Runs the subscriber's events and timers until `done` or `max_ms`; true if done.
  template <typename Done>
  bool run(ZmtpSub& sub, Done done, int64_t max_ms) {
    const int64_t end = mono_ms() + max_ms;
    while (mono_ms() < end) {
      epoll_event ev[4];
      int n = ::epoll_wait(epfd, ev, 4, 20);
      for (int i = 0; i < n; ++i) sub.on_events(ev[i].events, [](std::string_view, int64_t) {});
      sub.poll_reconnect(mono_ms());
      if (done()) return true;
    }
    return false;
  }
};

}  // namespace

TEST(ZmtpSub, SilentPeerIsDroppedAfterTheHandshakeTimeoutAndReconnected) {
  Listener peer;  // the kernel completes the TCP handshake; nobody ever answers the greeting
  Loop loop;
  ZmtpCounters c;
  ZmtpSub sub(loop.epfd, 1, peer.addr, 4096, &c, 7);
  sub.set_handshake_timeout_ms(200);
  sub.open();
  ASSERT_TRUE(loop.run(
      sub, [&] { return c.handshake_timeouts >= 1 && c.connects >= 2; }, 5000))
      << "timeouts " << c.handshake_timeouts << ", connects " << c.connects;
  EXPECT_EQ(c.ready, 0u);
  EXPECT_EQ(c.malformed, 0u);
  EXPECT_GE(c.lost, 1u) << "a timed-out handshake counts as a lost connection";
  sub.close();
  EXPECT_FALSE(sub.is_open());
}

TEST(ZmtpSub, PeerAnsweringGarbageIsClosedAsMalformed) {
  Listener peer;
  Loop loop;
  ZmtpCounters c;
  ZmtpSub sub(loop.epfd, 1, peer.addr, 4096, &c, 7);
  sub.open();
  int conn = -1;
  ASSERT_TRUE(loop.run(
      sub,
      [&] {
        if (conn < 0) conn = ::accept4(peer.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        return conn >= 0;
      },
      5000));
  std::string junk(64, 'x');  // not a ZMTP signature
  ASSERT_EQ(::send(conn, junk.data(), junk.size(), MSG_NOSIGNAL), static_cast<ssize_t>(junk.size()));
  EXPECT_TRUE(loop.run(
      sub, [&] { return c.malformed >= 1; }, 5000));
  EXPECT_EQ(c.ready, 0u);
  EXPECT_EQ(c.messages, 0u);
  ::close(conn);
  sub.close();
}
