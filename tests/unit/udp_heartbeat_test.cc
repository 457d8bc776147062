// The UDP heartbeat datagram (common/transport/udp_heartbeat.h): sealing, parsing, the MAC,
// and a real loopback socket pair.
#include "common/transport/udp_heartbeat.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace udp = gantry::transport::udp_hb;

namespace {

const std::string kKey(32, '\x11');

TEST(UdpHeartbeat, SealedDatagramParsesAndAuthenticates) {
  auto d = udp::seal(0x01020304, 0x1122334455667788ULL, kKey);
  ASSERT_EQ(d.size(), 32u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.data()), 3), "GHB");
  udp::Header h;
  ASSERT_EQ(udp::parse(d.data(), d.size(), &h), udp::Reject::kNone);
  EXPECT_EQ(h.session, 0x01020304u);
  EXPECT_EQ(h.seq, 0x1122334455667788ULL);
  EXPECT_TRUE(udp::authentic(d.data(), kKey));
}

TEST(UdpHeartbeat, ForgedTamperedAndMalformedDatagramsAreRefused) {
  auto d = udp::seal(7, 1, kKey);
  udp::Header h;
  // Another key (a forger who does not hold the session's key).
  EXPECT_FALSE(udp::authentic(d.data(), std::string(32, '\x12')));
  EXPECT_FALSE(udp::authentic(d.data(), "short"));
  // Any flipped bit of the signed part or the MAC.
  for (std::size_t i = 0; i < d.size(); ++i) {
    auto t = d;
    t[i] ^= 0x01;
    if (udp::parse(t.data(), t.size(), &h) != udp::Reject::kNone) continue;  // magic, session 0 ...
    EXPECT_FALSE(udp::authentic(t.data(), kKey)) << "byte " << i;
  }
  EXPECT_EQ(udp::parse(d.data(), 31, &h), udp::Reject::kSize);
  EXPECT_EQ(udp::parse(d.data(), 33, &h), udp::Reject::kSize);
  auto m = d;
  m[3] = 2;  // a later format version
  EXPECT_EQ(udp::parse(m.data(), m.size(), &h), udp::Reject::kMagic);
  auto zero_session = udp::seal(0, 1, kKey), zero_seq = udp::seal(1, 0, kKey);
  EXPECT_EQ(udp::parse(zero_session.data(), 32, &h), udp::Reject::kMagic);
  EXPECT_EQ(udp::parse(zero_seq.data(), 32, &h), udp::Reject::kMagic);
}

TEST(UdpHeartbeat, EachSideRefusesTheOthersDatagrams) {
  // Same session and key both ways: only the magic tells them apart, so an agent's datagram
  // reflected back is no coordinator heartbeat, and the reverse.
  auto from_agent = udp::seal(5, 9, kKey), from_coordinator = udp::seal(5, 9, kKey, udp::From::kCoordinator);
  EXPECT_NE(from_agent, from_coordinator);
  udp::Header h;
  EXPECT_EQ(udp::parse(from_agent.data(), 32, &h, udp::From::kCoordinator), udp::Reject::kMagic);
  EXPECT_EQ(udp::parse(from_coordinator.data(), 32, &h, udp::From::kAgent), udp::Reject::kMagic);
  ASSERT_EQ(udp::parse(from_coordinator.data(), 32, &h, udp::From::kCoordinator), udp::Reject::kNone);
  EXPECT_TRUE(udp::authentic(from_coordinator.data(), kKey));
}

TEST(UdpHeartbeat, TheCoordinatorAnswersToThePeerAndTheAgentTakesOnlyValidNewOnes) {
  udp::Receiver r;
  ASSERT_TRUE(r.bind("127.0.0.1", 0).ok());
  udp::Sender s;
  ASSERT_TRUE(s.open("tcp://127.0.0.1:1", r.port()).ok());
  ASSERT_TRUE(s.send(4, 1, kKey).ok());
  udp::Peer peer;
  for (int round = 0; round < 20 && peer.len == 0; ++round) {
    pollfd p{r.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    r.drain(10, [&](const unsigned char*, std::size_t, const udp::Peer& from) { peer = from; });
  }
  ASSERT_NE(peer.len, 0);
  // Sequence 2 and 3 of the session, a forgery, a replay of 2, one of another session.
  ASSERT_TRUE(r.send_to(udp::seal(4, 2, kKey, udp::From::kCoordinator), peer).ok());
  ASSERT_TRUE(r.send_to(udp::seal(4, 3, kKey, udp::From::kCoordinator), peer).ok());
  ASSERT_TRUE(r.send_to(udp::seal(4, 7, std::string(32, 'x'), udp::From::kCoordinator), peer).ok());
  ASSERT_TRUE(r.send_to(udp::seal(4, 2, kKey, udp::From::kCoordinator), peer).ok());
  ASSERT_TRUE(r.send_to(udp::seal(5, 9, kKey, udp::From::kCoordinator), peer).ok());
  // Loopback UDP queues a datagram at the receiver before sendto returns: all five wait.
  uint64_t rejected = 0;
  EXPECT_EQ(s.receive(4, 1, kKey, &rejected), 3u);
  EXPECT_EQ(rejected, 3u);
  EXPECT_EQ(s.receive(4, 3, kKey, &rejected), 0u) << "nothing new";
}

TEST(UdpHeartbeat, NewKeysAreRandom) {
  auto a = udp::new_key(), b = udp::new_key();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
}

TEST(UdpHeartbeat, SenderReachesReceiverOnLoopbackAndOversizedDatagramsAreCut) {
  udp::Receiver r;
  ASSERT_TRUE(r.bind("127.0.0.1", 0).ok());
  ASSERT_NE(r.port(), 0);
  udp::Sender s;
  auto st = s.open("tcp://127.0.0.1:1", r.port());
  ASSERT_TRUE(st.ok()) << st.error().message;
  for (uint64_t seq = 1; seq <= 100; ++seq) ASSERT_TRUE(s.send(9, seq, kKey).ok());
  // A raw oversized datagram too.
  int raw = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(r.port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string big(200, 'x');
  ASSERT_EQ(::sendto(raw, big.data(), big.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a), 200);
  ::close(raw);

  std::vector<uint64_t> seqs;
  int oversized = 0;
  for (int round = 0; round < 50 && seqs.size() + oversized < 101; ++round) {
    pollfd p{r.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    r.drain(1000, [&](const unsigned char* data, std::size_t len, const udp::Peer&) {
      udp::Header h;
      if (udp::parse(data, len, &h) == udp::Reject::kSize) {
        ++oversized;
        return;
      }
      ASSERT_TRUE(udp::authentic(data, kKey));
      seqs.push_back(h.seq);
    });
  }
  ASSERT_EQ(seqs.size(), 100u);
  for (uint64_t i = 0; i < 100; ++i) EXPECT_EQ(seqs[i], i + 1);
  EXPECT_EQ(oversized, 1);
}

TEST(UdpHeartbeat, AHostNameIsResolvedAsTheConnectionResolvesIt) {
  // "localhost" may list ::1 first; the ZeroMQ connection (IPv4 only) goes to 127.0.0.1, and
  // so must the datagrams, to a receiver bound where the coordinator's agent socket is.
  udp::Receiver r;
  ASSERT_TRUE(r.bind("127.0.0.1", 0).ok());
  udp::Sender s;
  ASSERT_TRUE(s.open("tcp://localhost:7600", r.port()).ok());
  ASSERT_TRUE(s.send(3, 1, kKey).ok());
  int got = 0;
  for (int round = 0; round < 20 && got == 0; ++round) {
    pollfd p{r.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    got += r.drain(10, [](const unsigned char*, std::size_t, const udp::Peer&) {});
  }
  EXPECT_EQ(got, 1);
}

TEST(UdpHeartbeat, BadAddressesAreErrorsNotCrashes) {
  udp::Receiver r;
  auto st = r.bind("not-an-ip", 0);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("not an IP address"), std::string::npos);
  udp::Sender s;
  EXPECT_FALSE(s.open("ipc:///tmp/x", 1).ok());
  EXPECT_FALSE(s.open("tcp://no-such-host.invalid:7400", 7400).ok());
  EXPECT_FALSE(s.send(1, 1, kKey).ok()) << "not open";
}

}  // namespace
