// The raw ZMTP + CURVE dealer of the storm benchmark against a real libzmq CURVE ROUTER with a
// ZAP handler (as the coordinator's): the handshake, messages both ways, a ZAP refusal, a wrong
// server key, and a server that goes away and comes back on the same port (the lost session is
// reported once; a message queued meanwhile is delivered on the new connection). Real sockets on
// loopback; every loop bounded.
#include "bench/zmtp_curve_dealer.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include <memory>
#include <string>
#include <vector>

#include "bench/sim_common.h"

using namespace gantry::bench;

namespace {

struct Keys {
  unsigned char pk[32], sk[32];
  char pz[41], sz[41];
  Keys() {
    crypto_box_keypair(pk, sk);
    zmq_z85_encode(pz, pk, 32);
    zmq_z85_encode(sz, sk, 32);
  }
  std::string bin() const { return std::string(reinterpret_cast<const char*>(pk), 32); }  // as ZAP gives it
};

// A CURVE ROUTER on 127.0.0.1 whose ZAP handler allows the (binary) keys in `allowed`.
struct Server {
  zmq::context_t ctx{1};
  zmq::socket_t zap{ctx, zmq::socket_type::rep};
  zmq::socket_t router{ctx, zmq::socket_type::router};
  std::vector<std::string> allowed;
  int port = 0;
  Server(const Keys& server, int want_port) {
    zap.bind("inproc://zeromq.zap.01");
    router.set(zmq::sockopt::curve_server, 1);
    router.set(zmq::sockopt::curve_secretkey, std::string(server.sz));
    router.set(zmq::sockopt::zap_domain, "test");
    router.set(zmq::sockopt::linger, 0);
    router.bind("tcp://127.0.0.1:" + (want_port ? std::to_string(want_port) : std::string("*")));
    std::string ep = router.get(zmq::sockopt::last_endpoint);
    port = std::stoi(ep.substr(ep.rfind(':') + 1));
  }
  // Answers ZAP requests; returns a received [identity, body] if any.
  bool poll_once(std::string* id, std::string* body) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}, {zap.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(0));
    if (items[1].revents & ZMQ_POLLIN) {
      std::vector<zmq::message_t> req;
      do {
        req.emplace_back();
        (void)zap.recv(req.back());
      } while (req.back().more());
      const std::string key(static_cast<const char*>(req.back().data()), req.back().size());
      bool ok = false;
      for (const auto& a : allowed) ok = ok || a == key;
      zap.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      zap.send(zmq::buffer(req[1].to_string()), zmq::send_flags::sndmore);
      zap.send(zmq::buffer(std::string(ok ? "200" : "400")), zmq::send_flags::sndmore);
      zap.send(zmq::str_buffer(""), zmq::send_flags::sndmore);
      zap.send(zmq::str_buffer("user"), zmq::send_flags::sndmore);
      zap.send(zmq::str_buffer(""), zmq::send_flags::none);
    }
    if (items[0].revents & ZMQ_POLLIN) {
      zmq::message_t a, b;
      (void)router.recv(a);
      (void)router.recv(b);
      *id = a.to_string();
      *body = b.to_string();
      return true;
    }
    return false;
  }
};

sockaddr_in loopback(int port) { return parse_addr("127.0.0.1:" + std::to_string(port)); }

struct Client {
  int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  CurveDealerCounters c;
  std::unique_ptr<CurveDealer> d;
  std::vector<std::string> got;
  int lost = 0;
  Client(const Keys& me, const unsigned char* server_pk, int port) {
    CurveKeys k{};
    std::memcpy(k.public_key, me.pk, 32);
    std::memcpy(k.secret_key, me.sk, 32);
    std::memcpy(k.server_key, server_pk, 32);
    d = std::make_unique<CurveDealer>(epfd, 7, loopback(port), k, 1 << 20, 100, 400, &c, 1);
    d->open();
  }
  ~Client() {
    d.reset();
    ::close(epfd);
  }
  void step(int ms) {
    epoll_event ev[8];
    int n = epoll_wait(epfd, ev, 8, ms);
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(ev[i].data.u64, 7u);
      d->on_events(
          ev[i].events, [this](std::string_view b) { got.emplace_back(b); }, [this] { lost++; });
    }
    d->poll_reconnect(mono_ms());
  }
};

// Runs client and server until `done` or 5 s; true if done.
template <typename Done>
bool run(Client& cl, Server* sv, std::string* id, std::string* body, Done done) {
  const int64_t end = mono_ms() + 5000;
  while (mono_ms() < end) {
    cl.step(5);
    if (sv) sv->poll_once(id, body);
    if (done()) return true;
  }
  return false;
}

TEST(CurveDealer, HandshakesWithLibzmqAndMessagesGoBothWays) {
  Keys server, me;
  Server sv(server, 0);
  sv.allowed = {me.bin()};
  Client cl(me, server.pk, sv.port);
  ASSERT_TRUE(cl.d->send("queued before READY"));
  std::string id, body;
  ASSERT_TRUE(run(cl, &sv, &id, &body, [&] { return !body.empty(); }))
      << "connects " << cl.c.connects << " malformed " << cl.c.malformed << " lost " << cl.c.lost << " refused "
      << cl.c.refused << " ready " << cl.c.ready;
  EXPECT_EQ(body, "queued before READY");
  EXPECT_TRUE(cl.d->ready());
  EXPECT_EQ(cl.c.ready, 1u);
  for (int i = 0; i < 3; ++i) {  // nonces rise both ways; a frame over 255 bytes uses the long form
    const std::string down = "down " + std::to_string(i) + std::string(i * 200, 'x');
    sv.router.send(zmq::buffer(id), zmq::send_flags::sndmore);
    sv.router.send(zmq::buffer(down), zmq::send_flags::none);
    ASSERT_TRUE(run(cl, &sv, &id, &body, [&] { return cl.got.size() == static_cast<size_t>(i + 1); }));
    EXPECT_EQ(cl.got.back(), down);
    body.clear();
    const std::string up = "up " + std::to_string(i) + std::string(i * 300, 'y');
    ASSERT_TRUE(cl.d->send(up));
    ASSERT_TRUE(run(cl, &sv, &id, &body, [&] { return !body.empty(); }));
    EXPECT_EQ(body, up);
  }
  // A multi-frame message is dropped whole; the next single frame still arrives.
  sv.router.send(zmq::buffer(id), zmq::send_flags::sndmore);
  sv.router.send(zmq::str_buffer("part 1"), zmq::send_flags::sndmore);
  sv.router.send(zmq::str_buffer("part 2"), zmq::send_flags::none);
  sv.router.send(zmq::buffer(id), zmq::send_flags::sndmore);
  sv.router.send(zmq::str_buffer("after"), zmq::send_flags::none);
  ASSERT_TRUE(run(cl, &sv, &id, &body, [&] { return cl.got.size() == 4; }))
      << "got " << cl.got.size() << " dropped " << cl.c.dropped << " malformed " << cl.c.malformed << " lost "
      << cl.c.lost << " ready " << cl.c.ready;
  EXPECT_EQ(cl.got.back(), "after");
  EXPECT_EQ(cl.c.dropped, 1u);
  EXPECT_EQ(cl.c.malformed, 0u);
  EXPECT_EQ(cl.lost, 0);
}

TEST(CurveDealer, RefusedByZapOrWrongServerKeyNeverGetsReady) {
  Keys server, me, other;
  {
    Server sv(server, 0);  // allows nobody: ZAP answers 400, the server sends ERROR
    Client cl(me, server.pk, sv.port);
    std::string id, body;
    EXPECT_TRUE(run(cl, &sv, &id, &body, [&] { return cl.c.refused >= 1; }));
    EXPECT_FALSE(cl.d->ready());
    EXPECT_TRUE(body.empty());
  }
  {
    Server sv(server, 0);
    sv.allowed = {me.bin()};
    Client cl(me, other.pk, sv.port);  // HELLO boxed for the wrong key: the server drops us
    std::string id, body;
    run(cl, &sv, &id, &body, [&] { return cl.c.lost >= 2; });
    EXPECT_GE(cl.c.lost, 1u);
    EXPECT_EQ(cl.c.ready, 0u);
    EXPECT_TRUE(body.empty());
  }
}

TEST(CurveDealer, ALostSessionIsReportedOnceAndQueuedMessagesGoToTheNextServer) {
  Keys server, me;
  auto sv = std::make_unique<Server>(server, 0);
  const int port = sv->port;
  sv->allowed = {me.bin()};
  Client cl(me, server.pk, port);
  ASSERT_TRUE(cl.d->send("first"));
  std::string id, body;
  ASSERT_TRUE(run(cl, sv.get(), &id, &body, [&] { return body == "first"; }));
  sv.reset();  // the server goes away
  ASSERT_TRUE(run(cl, nullptr, &id, &body, [&] { return cl.lost == 1; }));
  EXPECT_FALSE(cl.d->ready());
  ASSERT_TRUE(cl.d->send("while away"));
  sv = std::make_unique<Server>(server, port);
  sv->allowed = {me.bin()};
  body.clear();
  ASSERT_TRUE(run(cl, sv.get(), &id, &body, [&] { return body == "while away"; }))
      << "body " << body << " malformed " << cl.c.malformed << " lost " << cl.c.lost << " ready " << cl.c.ready
      << " refused " << cl.c.refused << " connects " << cl.c.connects;
  EXPECT_EQ(cl.lost, 1);
  EXPECT_EQ(cl.c.ready, 2u);
  EXPECT_EQ(cl.c.malformed, 0u);
}

}  // namespace
