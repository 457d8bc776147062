// The coordinator's host registry (coordinator/fleet/registry.h): UDP heartbeat sessions in their
// slot table, quiet confirmed sessions, expiry. Pure logic with explicit times.
#include "coordinator/fleet/registry.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace gantry::fleet {
namespace {

proto::Hello hello(const std::string& id) {
  proto::Hello h;
  h.host_id = id;
  return h;
}

const std::string kKey(32, 'k');

TEST(RegistryUdp, SessionsAreUniqueLookedUpExactlyAndAReusedSlotIsANewSession) {
  Registry r;
  r.on_hello(hello("a"), "a", 0, 0);
  r.on_hello(hello("b"), "b", 0, 0);
  auto& a = *r.find("a");
  auto& b = *r.find("b");
  const uint32_t sa = r.open_udp_session(a, kKey, 0)->session;
  const uint32_t sb = r.open_udp_session(b, kKey, 0)->session;
  EXPECT_NE(sa, 0u);
  EXPECT_NE(sa, sb);
  EXPECT_EQ(r.udp_slot(sa)->host, &a);
  EXPECT_EQ(r.udp_slot(sb)->host, &b);
  EXPECT_EQ(r.udp_slot(0), nullptr);
  EXPECT_EQ(r.udp_slot(sa ^ 0x80000000u), nullptr) << "same slot, another generation";
  EXPECT_EQ(r.udp_slot(0x000FFFFFu), nullptr) << "beyond the table";
  // A new Welcome: the old session is gone, the slot is reused under a new id.
  const uint32_t sa2 = r.open_udp_session(a, kKey, 5)->session;
  EXPECT_NE(sa2, sa);
  EXPECT_EQ(r.udp_slot(sa), nullptr);
  EXPECT_EQ(r.udp_slot(sa2)->host, &a);
  EXPECT_EQ(a.udp_session, sa2);
  EXPECT_EQ(r.udp_slot(sa2)->last_seq, 0u);
  EXPECT_FALSE(r.udp_slot(sa2)->confirmed);
  r.close_udp_session(a);
  EXPECT_EQ(r.udp_slot(sa2), nullptr);
  EXPECT_EQ(a.udp_session, 0u);
  EXPECT_EQ(r.open_udp_session(a, "short key", 0), nullptr);
  // Many sessions: all distinct, all found.
  std::set<uint32_t> ids;
  for (int i = 0; i < 1000; ++i) {
    r.on_hello(hello("h" + std::to_string(i)), "h" + std::to_string(i), 0, 0);
    ids.insert(r.open_udp_session(*r.find("h" + std::to_string(i)), kKey, 0)->session);
  }
  EXPECT_EQ(ids.size(), 1000u);
  for (uint32_t id : ids) ASSERT_NE(r.udp_slot(id), nullptr);
}

TEST(RegistryUdp, OnlyConfirmedSessionsSilentPastTheQuietTimeAreReturnedOnce) {
  Registry r;
  for (const char* id : {"quiet", "talking", "unconfirmed"}) r.on_hello(hello(id), id, 0, 0);
  const uint32_t sq = r.open_udp_session(*r.find("quiet"), kKey, 0)->session;
  const uint32_t st = r.open_udp_session(*r.find("talking"), kKey, 0)->session;
  r.open_udp_session(*r.find("unconfirmed"), kKey, 0);
  auto* q = r.udp_slot(sq);  // slot pointers last until the next open
  auto* t = r.udp_slot(st);
  q->confirmed = t->confirmed = true;
  // "talking" sent no datagram but other traffic (an order's progress) at 900.
  r.touch("talking", 900, 900);
  Millis next = 100000;
  auto out = r.udp_quiet(1000, 400, &next);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]->host_id, "quiet");
  EXPECT_FALSE(q->confirmed);
  EXPECT_TRUE(t->confirmed);
  EXPECT_EQ(next, 900 + 400 + 1) << "the next one that can go quiet";
  EXPECT_TRUE(r.udp_quiet(1000, 400, nullptr).empty()) << "once per silence";
}

TEST(RegistryUdp, ExpiryUnconfirmsAndScansEveryHost) {
  Registry r;
  r.on_hello(hello("a"), "a", 0, 0);
  r.on_hello(hello("b"), "b", 2000, 2000);
  auto* s = r.open_udp_session(*r.find("a"), kKey, 0);
  s->confirmed = true;
  Millis next = 0;
  auto lost = r.expire(3001, 3000, &next);
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0], "a");
  EXPECT_FALSE(s->confirmed);
  EXPECT_EQ(next, 2000 + 3000 + 1);
  EXPECT_EQ(r.all().size(), 2u);
}

TEST(Registry, SignalChannelIsWhatTheAgentLastSaidWhileOnlineAndForgottenAtHello) {
  Registry r;
  r.on_hello(hello("a"), "a", 0, 0);
  auto* h = r.find("a");
  EXPECT_STREQ(Registry::signal_channel(*h), "unknown") << "not reported yet (or an older agent)";
  EXPECT_EQ(Registry::host_json(*h, 0)["signal_channel"], "unknown");
  h->signal_channel = "up";
  EXPECT_EQ(Registry::host_json(*h, 0)["signal_channel"], "up");
  h->signal_channel = "down";
  EXPECT_STREQ(Registry::signal_channel(*h), "down");
  r.expire(10000, 3000);
  EXPECT_STREQ(Registry::signal_channel(*h), "unknown") << "an offline host's last word is stale";
  h->signal_channel = "up";
  r.on_hello(hello("a"), "a2", 20000, 20000);
  EXPECT_STREQ(Registry::signal_channel(*h), "unknown") << "a new connection reports again";
}

}  // namespace
}  // namespace gantry::fleet
