// The cap on unfinished handshakes per socket (coordinator/server/handshake_guard.h), with a
// fake clock and a recording refuser; and the agent socket's frame limit against the largest
// message an agent can send.
#include "coordinator/server/handshake_guard.h"

#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include "common/protocol/codec.h"
#include "common/protocol/messages.h"

namespace gantry::coordinator {
namespace {

struct GuardFixture {
  explicit GuardFixture(HandshakeGuard::Limits limits)
      : guard("agent", limits, clock, [this](int fd) {
          refused.push_back(fd);
          return true;
        }) {}
  FakeClock clock;
  std::vector<int> refused;
  HandshakeGuard guard;
};

TEST(HandshakeGuard, PastTheCapTheNewestIsRefusedWhileNoneIsOldEnoughToEvict) {
  GuardFixture f({3, 12000, 2000});
  for (int fd = 10; fd < 15; ++fd) f.guard.accepted(fd);
  f.guard.settle();
  EXPECT_EQ(f.refused, (std::vector<int>{14, 13}));
  EXPECT_EQ(f.guard.unproven(), 3u);
  EXPECT_EQ(f.guard.refused(), 2u);
}

TEST(HandshakeGuard, ASlowHandshakeMakesRoomForANewOne) {
  GuardFixture f({2, 12000, 2000});
  f.guard.accepted(10);
  f.clock.advance(500);
  f.guard.accepted(11);
  f.guard.settle();
  f.clock.advance(1600);  // 10 is 2.1 s old, 11 is 1.6 s old
  f.guard.accepted(12);
  f.guard.settle();
  EXPECT_EQ(f.refused, (std::vector<int>{10}));
  f.guard.accepted(13);  // 11 is not old enough yet: the newest goes
  f.guard.settle();
  EXPECT_EQ(f.refused, (std::vector<int>{10, 13}));
}

TEST(HandshakeGuard, WithoutEvictionTheOldestKeepsItsPlace) {
  GuardFixture f({1, 12000, 0});
  f.guard.accepted(10);
  f.clock.advance(5000);
  f.guard.accepted(11);
  f.guard.settle();
  EXPECT_EQ(f.refused, (std::vector<int>{11}));
}

TEST(HandshakeGuard, ProvenClosedAndOldConnectionsFreeTheirPlace) {
  GuardFixture f({2, 12000, 0});
  f.guard.accepted(10);
  f.guard.accepted(11);
  f.guard.proven(10);        // a message came from it: handshake over
  f.guard.disconnected(11);  // gone
  f.guard.accepted(12);
  f.guard.accepted(13);
  f.guard.settle();
  EXPECT_TRUE(f.refused.empty());
  f.clock.advance(12000);  // past the handshake interval: libzmq ended every handshake by then
  EXPECT_EQ(f.guard.unproven(), 0u);
  f.guard.accepted(14);
  f.guard.accepted(15);
  f.guard.settle();
  EXPECT_TRUE(f.refused.empty());
}

TEST(HandshakeGuard, AReusedFdIsItsNewestConnection) {
  GuardFixture f({1, 12000, 2000});
  f.guard.accepted(10);
  f.clock.advance(3000);
  f.guard.disconnected(10);
  f.guard.accepted(10);  // the same number, a new connection: young, not evictable
  f.guard.accepted(11);
  f.guard.settle();
  EXPECT_EQ(f.refused, (std::vector<int>{11}));
  f.guard.proven(10);
  EXPECT_EQ(f.guard.unproven(), 0u);
}

TEST(HandshakeGuard, AFdThatIsNoLongerTheSocketsIsNotCounted) {
  // The refuser says the fd was not the socket's any more (closed and reused): not counted.
  FakeClock clock;
  HandshakeGuard guard("pub", {0, 12000, 0}, clock, [](int) { return false; });
  guard.accepted(7);
  guard.settle();
  EXPECT_EQ(guard.refused(), 0u);
  EXPECT_EQ(guard.unproven(), 0u);
}

TEST(HandshakeGuard, TheBoundIsTheSumOverTheSockets) {
  using namespace unaccepted;
  EXPECT_EQ(bound_bytes(), 256 * (256 + 96) * 1024LL + 8 * (4096 + 96) * 1024LL + 512 * (4 + 96) * 1024LL);
  EXPECT_EQ(bound_bytes() / 1024, 174848);  // docs/SECURITY.md, Limits
}

TEST(HandshakeGuard, TheLargestAgentMessageFitsTheAgentSocket) {
  // Every field at its protocol limit (PROTOCOL.md §4): 256 services, 64 labels, 128-byte names.
  const std::string name(128, 'n');
  proto::Hello h;
  h.host_id = name;
  h.agent_version = std::string(64, 'v');
  h.capabilities = ~uint64_t{0};
  for (int i = 0; i < 64; ++i) {
    std::string key = std::to_string(i);
    h.labels[key + std::string(128 - key.size(), 'k')] = std::string(128, 'l');
  }
  for (int i = 0; i < 256; ++i) h.services.push_back({name, name, name, "reverting", name});
  const std::string hello = proto::encode(proto::Message{h});
  proto::Report r;
  r.order_id = r.service = r.running_version = name;
  r.rollout_id = ~uint64_t{0};
  r.outcome = "failed_reverted";
  r.message = std::string(4096, 'm');
  for (int i = 0; i < 32; ++i) r.timings_ms[std::to_string(i) + std::string(62, 't')] = ~uint64_t{0};
  const std::string report = proto::encode(proto::Message{r});
  std::cout << "largest Hello: " << hello.size() << " bytes, largest Report: " << report.size() << " bytes\n";
  // CURVE adds a MESSAGE command's 8-byte nonce, 16-byte tag, flags and name (~40 bytes) per frame.
  EXPECT_LT(hello.size() + 64, static_cast<size_t>(unaccepted::kAgentFrame) * 3 / 4);
  EXPECT_LT(report.size() + 64, static_cast<size_t>(unaccepted::kAgentFrame));
}

}  // namespace
}  // namespace gantry::coordinator
