// Key files, release manifests, the Order's signed fields on the wire, the coordinator's key ring
// and ZAP decisions, and fail-closed CURVE servers.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <vector>
#include <zmq.hpp>

#include "common/protocol/codec.h"
#include "common/release/manifest.h"
#include "common/security/keys.h"
#include "common/transport/zmq_transport.h"
#include "coordinator/server/keyring.h"
#include "coordinator/store/store.h"

using namespace gantry;

namespace {

struct Tmp {
  std::string path;
  Tmp() {
    char t[] = "/tmp/gantry-secunit-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~Tmp() { std::filesystem::remove_all(path); }
};

class FixedClock : public Clock {
 public:
  Millis now_ms() const override { return 1000; }
  Millis wall_ms() const override { return 1700000000000; }
};

TEST(KeyFiles, CurveKeypairRoundTripsWithSafeModes) {
  Tmp t;
  auto kp = security::generate_curve_keypair();
  ASSERT_TRUE(kp);
  ASSERT_TRUE(security::write_curve_keypair(t.path + "/a", *kp).ok());
  struct stat st {};
  ASSERT_EQ(::stat((t.path + "/a.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = security::read_curve_secret(t.path + "/a.key");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->public_z85, kp->public_z85);
  EXPECT_EQ(*security::read_curve_public(t.path + "/a.pub"), kp->public_z85);
  EXPECT_FALSE(security::write_curve_keypair(t.path + "/a", *kp).ok()) << "never overwrites";
  ::chmod((t.path + "/a.key").c_str(), 0640);
  EXPECT_EQ(security::read_curve_secret(t.path + "/a.key").error().code, "permissions");
  EXPECT_FALSE(security::is_z85_key("too short"));
}

TEST(Manifest, SignVerifyAndEveryRefusal) {
  auto kp = *security::generate_signing_keypair();
  auto other = *security::generate_signing_keypair();
  release::Manifest m{"web", "2.4.1", std::string(64, 'a'), 1234, "2024-01-01T00:00:00Z"};
  const std::string bytes = m.to_bytes();
  const std::string sig = release::sign(bytes, kp.secret_key);
  auto ok = release::verify(bytes, sig, {other.public_key, kp.public_key});
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->service, "web");
  EXPECT_TRUE(release::check_matches(*ok, "web", "2.4.1", std::string(64, 'a'), 1234).ok());
  EXPECT_EQ(release::check_matches(*ok, "db", "2.4.1", std::string(64, 'a'), 1234).error().code, "mismatch");
  EXPECT_EQ(release::check_matches(*ok, "web", "2.4.2", std::string(64, 'a'), 1234).error().code, "mismatch");
  EXPECT_EQ(release::check_matches(*ok, "web", "2.4.1", std::string(64, 'b'), 1234).error().code, "mismatch");
  EXPECT_EQ(release::check_matches(*ok, "web", "2.4.1", std::string(64, 'a'), 1235).error().code, "mismatch");
  EXPECT_EQ(release::verify("", "", {kp.public_key}).error().code, "unsigned");
  EXPECT_EQ(release::verify(bytes, sig, {other.public_key}).error().code, "signature");
  std::string tampered = bytes;
  tampered[tampered.find("1234")] = '9';
  EXPECT_EQ(release::verify(tampered, sig, {kp.public_key}).error().code, "signature");
  EXPECT_EQ(release::verify(bytes, "zz", {kp.public_key}).error().code, "signature");
  // A validly signed but malformed manifest is still refused by the parser.
  for (
      std::string bad :
      {std::string("[]"), std::string("{}"), std::string("{\"type\":1}"),
       std::string(
           R"({"created":"x","service":"../x","sha256":"aa","size":1,"type":"gantry-release-manifest/1","version":"v"})"),
       std::string(
           R"({"created":"x","extra":1,"service":"s","sha256":"aa","size":1,"type":"gantry-release-manifest/1","version":"v"})"),
       std::string(5000, '{')}) {
    EXPECT_FALSE(release::verify(bad, release::sign(bad, kp.secret_key), {kp.public_key})) << bad.substr(0, 60);
  }
}

TEST(Codec, OrderCarriesManifestAndSignatureAndStaysCompatible) {
  proto::Order o{"r1-1", 1, "web", "update", "v2", std::string(64, 'c'), 10, 0, 0, "", ""};
  auto plain = proto::decode(proto::encode(o));
  ASSERT_TRUE(plain);
  EXPECT_TRUE(std::get<proto::Order>(*plain).manifest.empty());
  o.manifest = "{\"x\":1}";
  o.signature = std::string(128, 'f');
  auto signed_back = proto::decode(proto::encode(o));
  ASSERT_TRUE(signed_back);
  EXPECT_EQ(std::get<proto::Order>(*signed_back).manifest, o.manifest);
  EXPECT_EQ(std::get<proto::Order>(*signed_back).signature, o.signature);
  o.signature = std::string(127, 'f') + "!";
  EXPECT_FALSE(proto::decode(proto::encode(o)));
}

TEST(KeyRing, ZapDecisionsFollowTheAllowlistAtEveryLookup) {
  Tmp t;
  auto st = store::Store::open(t.path + "/c.db");
  ASSERT_TRUE(st);
  FixedClock clock;
  coordinator::KeyRing ring(**st, clock);
  ASSERT_TRUE(ring.load().ok());
  auto agent = security::generate_curve_keypair()->public_z85;
  auto op = security::generate_curve_keypair()->public_z85;
  ASSERT_TRUE(ring.bootstrap_operator("root", op, coordinator::Role::kAdmin).ok());
  EXPECT_TRUE(ring.zap(coordinator::kZapDomainOperators, op).allow);
  EXPECT_FALSE(ring.zap(coordinator::kZapDomainOperators, agent).allow);
  // Unknown agent: recorded as pending with the address it came from, and refused on every
  // socket until accepted (nothing it sends after a handshake could be bounded).
  EXPECT_FALSE(ring.zap(coordinator::kZapDomainAgents, agent, "192.0.2.7").allow);
  EXPECT_EQ(ring.agent(agent).kind, coordinator::AgentStanding::kPending);
  EXPECT_FALSE(ring.zap(coordinator::kZapDomainAgents, agent, "192.0.2.7").allow);
  EXPECT_FALSE(ring.zap(coordinator::kZapDomainPub, agent).allow);
  // A pending key names no host: by host name there is nothing to accept, and the error says how.
  auto by_name = ring.accept("web-1", "", "test");
  ASSERT_FALSE(by_name);
  EXPECT_NE(by_name.error().message.find("gantry keys accept KEY --host web-1"), std::string::npos);
  ASSERT_TRUE(ring.accept(agent, "web-1", "test"));
  EXPECT_TRUE(ring.zap(coordinator::kZapDomainAgents, agent).allow);
  EXPECT_EQ(ring.agent(agent).kind, coordinator::AgentStanding::kAccepted);
  EXPECT_EQ(ring.agent(agent).host_id, "web-1");
  EXPECT_TRUE(ring.zap(coordinator::kZapDomainPub, agent).allow);
  // A second key for the same host retires the first.
  auto agent2 = security::generate_curve_keypair()->public_z85;
  ASSERT_TRUE(ring.accept(agent2, "web-1", "test"));
  EXPECT_EQ(ring.agent(agent).state, "revoked");
  EXPECT_FALSE(ring.zap(coordinator::kZapDomainAgents, agent).allow);
  // Revocation is visible at the very next lookup, and survives a reload from the store.
  ASSERT_TRUE(ring.revoke("web-1", "test"));
  EXPECT_EQ(ring.agent(agent2).kind, coordinator::AgentStanding::kRefused);
  ASSERT_TRUE(ring.revoke("root", "test"));
  EXPECT_EQ(ring.op(op), nullptr);
  coordinator::KeyRing again(**st, clock);
  ASSERT_TRUE(again.load().ok());
  EXPECT_EQ(again.agent(agent2).state, "revoked");
  EXPECT_EQ(again.op(op), nullptr);
  EXPECT_FALSE(again.accept("nobody", "", "test"));
}

// Bounded waits (no timing assertion): a message either arrives within 2 s or we call it refused.
bool delivered(zmq::context_t& ctx, bool with_handler) {
  auto server = security::generate_curve_keypair();
  auto client = security::generate_curve_keypair();
  zmq::socket_t zap(ctx, zmq::socket_type::rep);
  if (with_handler) zap.bind("inproc://zeromq.zap.01");
  zmq::socket_t router(ctx, zmq::socket_type::router);
  transport::SocketOptions so;
  so.curve.server = true;
  so.curve.public_key = server->public_z85;
  so.curve.secret_key = server->secret_z85;
  so.curve.zap_domain = "test";
  transport::configure(router, so);
  router.bind("tcp://127.0.0.1:*");
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  transport::SocketOptions co;
  co.curve.public_key = client->public_z85;
  co.curve.secret_key = client->secret_z85;
  co.curve.server_public_key = server->public_z85;
  transport::configure(dealer, co);
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  (void)dealer.send(zmq::str_buffer("hi"), zmq::send_flags::dontwait);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}, {zap.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, with_handler ? 2 : 1, std::chrono::milliseconds(50));
    if (with_handler && (items[1].revents & ZMQ_POLLIN)) {
      std::vector<zmq::message_t> req;
      do {
        req.emplace_back();
        (void)zap.recv(req.back());
      } while (req.back().more());
      const std::string rid = req[1].to_string();
      zap.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      zap.send(zmq::buffer(rid), zmq::send_flags::sndmore);
      zap.send(zmq::str_buffer("200"), zmq::send_flags::sndmore);
      zap.send(zmq::str_buffer("OK"), zmq::send_flags::sndmore);
      zap.send(zmq::str_buffer("someone"), zmq::send_flags::sndmore);
      zap.send(zmq::str_buffer(""), zmq::send_flags::none);
    }
    if (items[0].revents & ZMQ_POLLIN) return transport::recv_routed(router).has_value();
  }
  return false;
}

TEST(Transport, CurveServerFailsClosedWithoutAZapHandler) {
  zmq::context_t a(1), b(1);
  EXPECT_FALSE(delivered(a, false)) << "ZAP_ENFORCE_DOMAIN must refuse clients when no handler runs";
  EXPECT_TRUE(delivered(b, true));
}

// configure_context turns libzmq's zero-copy receive off (frames are copied out of the engine's
// read buffer, so a connection does not pin that buffer and its refcount table); frames of every
// size class (in-place, inside the buffer, larger than it) still arrive byte for byte.
TEST(Transport, ContextWithoutZeroCopyDeliversFramesOfEverySizeIntact) {
  zmq::context_t ctx(1);
  transport::configure_context(ctx);
  EXPECT_EQ(zmq_ctx_get(ctx.handle(), 10 /* ZMQ_ZERO_COPY_RECV */), 0);
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  transport::SocketOptions so;
  transport::configure(router, so);
  so.routing_id = "d1";
  transport::configure(dealer, so);
  router.bind("tcp://127.0.0.1:*");
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  for (size_t size : {size_t{1}, size_t{33}, size_t{34}, size_t{4000}, size_t{8191}, size_t{9000}, size_t{300000}}) {
    std::string body(size, '\0');
    for (size_t i = 0; i < size; ++i) body[i] = static_cast<char>((i * 131 + size) & 0xff);
    ASSERT_TRUE(dealer.send(zmq::buffer(body), zmq::send_flags::dontwait).has_value());
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
    ASSERT_GT(zmq::poll(items, 1, std::chrono::milliseconds(5000)), 0) << "frame of " << size << " bytes";
    auto in = transport::recv_routed(router);
    ASSERT_TRUE(in.has_value()) << size;
    EXPECT_EQ(in->identity, "d1");
    EXPECT_EQ(in->payload, body) << "frame of " << size << " bytes";
  }
}

TEST(Transport, EndpointsSplitIntoHostAndPort) {
  auto v4 = transport::tcp_host_port("tcp://10.0.0.1:7600");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "10.0.0.1");
  EXPECT_EQ(v4->port, "7600");
  EXPECT_FALSE(v4->ipv6_literal);
  auto v6 = transport::tcp_host_port("tcp://eth0;[fe80::1%eth0]:7600");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "fe80::1%eth0");
  EXPECT_TRUE(v6->ipv6_literal);
  EXPECT_FALSE(transport::tcp_host_port("ipc:///x:1"));
  EXPECT_FALSE(transport::tcp_host_port("tcp://nonsense"));
  auto bare = transport::split_host_port("[::1]:0");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->host, "::1");
  EXPECT_EQ(bare->port, "0");
  EXPECT_FALSE(transport::split_host_port("off"));
}

// An [IPv6] literal endpoint works (libzmq needs ZMQ_IPV6 for it; transport::bind/connect set
// it for such endpoints only), and an IPv4 one still binds as IPv4.
TEST(Transport, Ipv6LiteralEndpointsBindAndConnect) {
  int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool have_v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (probe >= 0) ::close(probe);
  if (!have_v6) GTEST_SKIP() << "no ::1 on this host";
  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  transport::SocketOptions so;
  transport::configure(router, so);
  so.routing_id = "d6";
  transport::configure(dealer, so);
  auto st = transport::bind(router, "tcp://[::1]:*");
  ASSERT_TRUE(st.ok()) << st.error().message;
  const std::string ep = router.get(zmq::sockopt::last_endpoint);
  EXPECT_EQ(ep.rfind("tcp://[::1]:", 0), 0u) << ep;
  ASSERT_TRUE(transport::check_connect_endpoint(ep).ok());
  ASSERT_TRUE(transport::connect(dealer, ep).ok());
  ASSERT_TRUE(dealer.send(zmq::str_buffer("over v6"), zmq::send_flags::dontwait).has_value());
  zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
  ASSERT_GT(zmq::poll(items, 1, std::chrono::milliseconds(5000)), 0);
  auto in = transport::recv_routed(router);
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->payload, "over v6");
  zmq::socket_t v4(ctx, zmq::socket_type::router);
  ASSERT_TRUE(transport::bind(v4, "tcp://127.0.0.1:*").ok());
  EXPECT_EQ(v4.get(zmq::sockopt::last_endpoint).rfind("tcp://127.0.0.1:", 0), 0u);
}

}  // namespace
