// The floor's UDP heartbeat sessions (bench/udp_sessions.h): the coordinator's rule for
// datagrams, confirmations and udp_lost, on sealed datagrams and a clock the test moves.
#include "bench/udp_sessions.h"

#include <gtest/gtest.h>

namespace gantry::bench {
namespace {

udp_hb::Datagram sealed(const UdpSessions::Offer& o, uint64_t seq) { return udp_hb::seal(o.session, seq, o.key); }

TEST(UdpSessions, FirstValidDatagramIsConfirmedOnceAndReplaysAreRefused) {
  UdpSessions us;
  auto o = us.open("h1", "conn-1", 0);
  ASSERT_NE(o.session, 0u);
  ASSERT_EQ(o.key.size(), udp_hb::kKeyBytes);
  auto d = sealed(o, 1);
  auto c = us.on_datagram(d.data(), d.size(), 10);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->host, "h1");
  EXPECT_EQ(c->conn, "conn-1");
  EXPECT_EQ(c->seq, 1u);
  EXPECT_FALSE(us.on_datagram(d.data(), d.size(), 20));  // replayed
  auto d2 = sealed(o, 2);
  EXPECT_FALSE(us.on_datagram(d2.data(), d2.size(), 30));  // accepted, already confirmed
  auto j = us.counters();
  EXPECT_EQ(j["accepted"], 2);
  EXPECT_EQ(j["confirmed"], 1);
  EXPECT_EQ(j["rejected"]["replay"], 1);
}

TEST(UdpSessions, ForgedUnknownAndMalformedDatagramsAreCountedByReason) {
  UdpSessions us;
  auto o = us.open("h1", "conn-1", 0);
  auto forged = udp_hb::seal(o.session, 1, std::string(udp_hb::kKeyBytes, '\x01'));
  EXPECT_FALSE(us.on_datagram(forged.data(), forged.size(), 1));
  auto stranger = udp_hb::seal(o.session + 1, 1, o.key);
  EXPECT_FALSE(us.on_datagram(stranger.data(), stranger.size(), 1));
  auto d = sealed(o, 1);
  EXPECT_FALSE(us.on_datagram(d.data(), d.size() - 1, 1));
  auto bad = d;
  bad[0] = 'X';
  EXPECT_FALSE(us.on_datagram(bad.data(), bad.size(), 1));
  auto j = us.counters();
  EXPECT_EQ(j["accepted"], 0);
  EXPECT_EQ(j["rejected"]["mac"], 1);
  EXPECT_EQ(j["rejected"]["unknown_session"], 1);
  EXPECT_EQ(j["rejected"]["size"], 1);
  EXPECT_EQ(j["rejected"]["magic"], 1);
  // The forged datagram did not advance the sequence: the real seq 1 still gets through.
  EXPECT_TRUE(us.on_datagram(d.data(), d.size(), 2));
}

TEST(UdpSessions, SilentConfirmedSessionIsLostOnceThenConfirmedAgain) {
  UdpSessions us;
  auto o = us.open("h1", "conn-1", 0);
  auto unconfirmed = us.open("h2", "conn-2", 0);
  (void)unconfirmed;
  auto d1 = sealed(o, 1);
  ASSERT_TRUE(us.on_datagram(d1.data(), d1.size(), 1000));
  EXPECT_TRUE(us.quiet(3000, 2000).empty());  // exactly 2 intervals: not yet
  auto lost = us.quiet(3001, 2000);
  ASSERT_EQ(lost.size(), 1u);  // h2 was never confirmed: nothing to take back
  EXPECT_EQ(lost[0], std::make_pair(std::string("h1"), std::string("conn-1")));
  EXPECT_TRUE(us.quiet(9000, 2000).empty());  // declared once
  auto d2 = sealed(o, 2);
  auto c = us.on_datagram(d2.data(), d2.size(), 9100);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->seq, 2u);
  EXPECT_EQ(us.counters()["lost"], 1);
}

TEST(UdpSessions, MessagesOnTheConnectionKeepASessionAlive) {
  UdpSessions us;
  auto o = us.open("h1", "conn-1", 0);
  auto d1 = sealed(o, 1);
  ASSERT_TRUE(us.on_datagram(d1.data(), d1.size(), 1000));
  us.touch_conn("conn-1", 2500);  // e.g. a report instead of that interval's heartbeat
  EXPECT_TRUE(us.quiet(4000, 2000).empty());
  us.touch_conn("someone-else", 5000);
  EXPECT_EQ(us.quiet(4501, 2000).size(), 1u);
}

TEST(UdpSessions, ANewWelcomeEndsTheOldSession) {
  UdpSessions us;
  auto old_offer = us.open("h1", "conn-1", 0);
  auto new_offer = us.open("h1", "conn-2", 0);
  ASSERT_NE(old_offer.session, new_offer.session);
  auto d = sealed(old_offer, 5);
  EXPECT_FALSE(us.on_datagram(d.data(), d.size(), 1));
  EXPECT_EQ(us.counters()["rejected"]["unknown_session"], 1);
  EXPECT_EQ(us.counters()["sessions"], 1);
  us.close("h1");
  auto d2 = sealed(new_offer, 1);
  EXPECT_FALSE(us.on_datagram(d2.data(), d2.size(), 1));
  EXPECT_EQ(us.counters()["sessions"], 0);
}

}  // namespace
}  // namespace gantry::bench
