// The key ring's rules that an attacker probed (issue 20): revocation and rejection stay until an
// admin undoes them explicitly, and a pending key never reaches a host: it names none, and a
// claim recorded by an older coordinator is not enough to take or disconnect one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/security/keys.h"
#include "coordinator/server/keyring.h"
#include "coordinator/store/store.h"

using namespace gantry;
using coordinator::AgentStanding;
using coordinator::KeyRing;
using coordinator::Role;

namespace {

struct TmpDir {
  std::string path;
  TmpDir() {
    char t[] = "/tmp/gantry-keyring-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TmpDir() { std::filesystem::remove_all(path); }
};

class FixedClock : public Clock {
 public:
  Millis now_ms() const override { return 1000; }
  Millis wall_ms() const override { return 1700000000000; }
};

std::string fresh_key() { return security::generate_curve_keypair()->public_z85; }

struct Ring {
  TmpDir dir;
  FixedClock clock;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<KeyRing> ring;
  Ring() {
    auto st = store::Store::open(dir.path + "/c.db");
    EXPECT_TRUE(st);
    store = std::move(*st);
    ring = std::make_unique<KeyRing>(*store, clock);
    EXPECT_TRUE(ring->load().ok());
  }
  // A new key ring over the same store, as after a coordinator restart.
  void restart() {
    ring = std::make_unique<KeyRing>(*store, clock);
    ASSERT_TRUE(ring->load().ok());
  }
};

TEST(KeyRing, ABootstrapFlagNeverUndoesARevokedAgentKey) {
  Ring r;
  const auto key = fresh_key();
  ASSERT_TRUE(r.ring->bootstrap_agent("web-1", key).ok());
  ASSERT_TRUE(r.ring->revoke("web-1", "admin"));
  r.restart();
  Status again = r.ring->bootstrap_agent("web-1", key);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "revoked");
  EXPECT_NE(again.error().message.find("gantry keys accept"), std::string::npos) << again.error().message;
  EXPECT_EQ(r.ring->agent(key).state, "revoked");
  EXPECT_FALSE(r.ring->zap(coordinator::kZapDomainAgents, key).allow);
  // An explicit accept by key is the way back.
  ASSERT_TRUE(r.ring->accept(key, "web-1", "admin"));
  EXPECT_EQ(r.ring->agent(key).kind, AgentStanding::kAccepted);
}

TEST(KeyRing, ABootstrapFlagNeverUndoesARejectedAgentKey) {
  Ring r;
  const auto key = fresh_key();
  EXPECT_FALSE(r.ring->zap(coordinator::kZapDomainAgents, key).allow);  // recorded as pending, refused
  ASSERT_TRUE(r.ring->reject(key, "admin"));
  r.restart();
  Status again = r.ring->bootstrap_agent("web-2", key);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "revoked");
  EXPECT_EQ(r.ring->agent(key).state, "rejected");
}

TEST(KeyRing, ABootstrapFlagNeverUndoesARevokedOperatorKey) {
  Ring r;
  const auto root = fresh_key(), other = fresh_key();
  ASSERT_TRUE(r.ring->bootstrap_operator("root", root, Role::kAdmin).ok());
  ASSERT_TRUE(r.ring->add_operator("ops", other, Role::kAdmin, "root"));
  ASSERT_TRUE(r.ring->revoke(root, "ops"));
  r.restart();
  Status again = r.ring->bootstrap_operator("root", root, Role::kAdmin);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "revoked");
  EXPECT_EQ(r.ring->op(root), nullptr);
  EXPECT_FALSE(r.ring->zap(coordinator::kZapDomainOperators, root).allow);
}

// A pending key names no host (ZAP refuses it, so it never says hello). Rows from coordinators
// before that, where a pending key had claimed a host's name, are written straight to the store.
void legacy_claim(Ring& r, const std::string& key, const std::string& host) {
  ASSERT_TRUE(r.store->put_agent_keys({{key, host, "pending", 1, 1, "hello (claimed)"}}).ok());
  r.restart();
}

TEST(KeyRing, RejectingAPendingKeyThatClaimedARealHostNeverDisconnectsThatHost) {
  Ring r;
  const auto real = fresh_key(), attacker = fresh_key(), fresh = fresh_key();
  ASSERT_TRUE(r.ring->bootstrap_agent("web-1", real).ok());
  EXPECT_FALSE(r.ring->zap(coordinator::kZapDomainAgents, fresh).allow);
  EXPECT_EQ(r.ring->agent(fresh).host_id, "");  // pending, naming no host
  auto plain = r.ring->reject(fresh, "admin");
  ASSERT_TRUE(plain);
  EXPECT_TRUE(plain->hosts_to_disconnect.empty());
  legacy_claim(r, attacker, "web-1");
  auto ch = r.ring->reject(attacker, "admin");
  ASSERT_TRUE(ch);
  EXPECT_TRUE(ch->hosts_to_disconnect.empty());
  EXPECT_EQ(r.ring->agent(real).kind, AgentStanding::kAccepted);
  // Revoking the real key does disconnect its host.
  auto rev = r.ring->revoke(real, "admin");
  ASSERT_TRUE(rev);
  EXPECT_EQ(rev->hosts_to_disconnect, std::vector<std::string>{"web-1"});
}

TEST(KeyRing, AcceptingByHostNameRefusesWhenTheNameIsOwnedAndSaysHowToAcceptByKey) {
  Ring r;
  const auto real = fresh_key(), attacker = fresh_key();
  ASSERT_TRUE(r.ring->bootstrap_agent("web-1", real).ok());
  legacy_claim(r, attacker, "web-1");
  auto ch = r.ring->accept("web-1", "", "admin");
  ASSERT_FALSE(ch);
  EXPECT_EQ(ch.error().code, "owned");
  EXPECT_NE(ch.error().message.find("gantry keys accept " + attacker + " --host web-1"), std::string::npos);
  EXPECT_EQ(r.ring->agent(real).kind, AgentStanding::kAccepted);
  EXPECT_EQ(r.ring->agent(attacker).kind, AgentStanding::kPending);
  // By key, after checking it on the host, the new key replaces the old one (which is disconnected).
  auto by_key = r.ring->accept(attacker, "web-1", "admin");
  ASSERT_TRUE(by_key);
  EXPECT_EQ(by_key->hosts_to_disconnect, std::vector<std::string>{"web-1"});
  EXPECT_EQ(r.ring->agent(real).state, "revoked");
}

TEST(KeyRing, AcceptingByHostNameRefusesWhenTwoPendingKeysClaimIt) {
  Ring r;
  const auto a = fresh_key(), b = fresh_key();
  legacy_claim(r, a, "web-9");
  legacy_claim(r, b, "web-9");
  auto ch = r.ring->accept("web-9", "", "admin");
  ASSERT_FALSE(ch);
  EXPECT_EQ(ch.error().code, "ambiguous");
  EXPECT_EQ(r.ring->agent(a).kind, AgentStanding::kPending);
  EXPECT_EQ(r.ring->agent(b).kind, AgentStanding::kPending);
}

}  // namespace

// The coordinators of one installation share a server keypair: a client authenticating with the
// coordinator's own public key is a peer coordinator on the operator socket, and nowhere else.
TEST(KeyRing, OnlyTheServerKeyIsAPeerAndOnlyOnTheOperatorSocket) {
  Ring r;
  const auto server = fresh_key(), other = fresh_key();
  auto d = r.ring->zap(coordinator::kZapDomainOperators, server);
  EXPECT_FALSE(d.allow);  // no peer key set (no CURVE): nobody is a peer
  EXPECT_FALSE(r.ring->is_peer(""));
  r.ring->set_peer_key(server);
  d = r.ring->zap(coordinator::kZapDomainOperators, server);
  EXPECT_TRUE(d.allow);
  EXPECT_EQ(d.user_id, server);
  EXPECT_TRUE(r.ring->is_peer(server));
  EXPECT_EQ(r.ring->op(server), nullptr);  // not an operator key
  EXPECT_FALSE(r.ring->zap(coordinator::kZapDomainOperators, other).allow);
  EXPECT_FALSE(r.ring->is_peer(other));
  EXPECT_FALSE(r.ring->zap(coordinator::kZapDomainPub, server).allow);
  // No operator key can be given the peer role.
  EXPECT_FALSE(coordinator::parse_role("peer"));
  EXPECT_STREQ(coordinator::role_name(Role::kPeer), "peer");
}
