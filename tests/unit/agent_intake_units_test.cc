// The order intake's own units: ReleaseSignatures (which releases the agent may install) and
// StoppedRollouts (rollouts whose later update orders are refused). Real ed25519 keys.
#include <gtest/gtest.h>

#include <string>

#include "agent/core/release_signatures.h"
#include "agent/core/stopped_rollouts.h"
#include "common/release/manifest.h"
#include "common/security/keys.h"

namespace gantry::agent {
namespace {

proto::Order signed_order(const std::string& secret_key, const std::string& version) {
  release::Manifest m{"web", version, std::string(64, 'a'), 1234, "2024-01-01T00:00:00Z"};
  proto::Order o;
  o.service = "web";
  o.version = version;
  o.sha256 = m.sha256;
  o.size = m.size;
  o.manifest = m.to_bytes();
  o.signature = release::sign(o.manifest, secret_key);
  return o;
}

TEST(AgentReleaseSignatures, WithoutKeysEveryOrderPasses) {
  ReleaseSignatures sigs;
  proto::Order o;
  o.service = "web";
  o.version = "1.0";
  EXPECT_TRUE(sigs.check(o).ok());
}

TEST(AgentReleaseSignatures, SignedAndMatchingPassesAgainAndKeysReplaceTheCache) {
  auto kp = *security::generate_signing_keypair();
  auto other = *security::generate_signing_keypair();
  ReleaseSignatures sigs;
  sigs.set_keys({kp.public_key});
  proto::Order o = signed_order(kp.secret_key, "2.0");
  EXPECT_TRUE(sigs.check(o).ok());
  EXPECT_TRUE(sigs.check(o).ok()) << "the same bytes, from the verified cache";
  proto::Order wrong_size = o;
  wrong_size.size = 1235;
  EXPECT_EQ(sigs.check(wrong_size).error().code, "mismatch") << "still matched against its manifest";
  sigs.set_keys({other.public_key});
  EXPECT_EQ(sigs.check(o).error().code, "signature") << "verified with the previous keys only";
  proto::Order unsigned_order = o;
  unsigned_order.manifest.clear();
  unsigned_order.signature.clear();
  EXPECT_EQ(sigs.check(unsigned_order).error().code, "unsigned");
}

TEST(AgentStoppedRollouts, RemembersTheFirstKindPerRolloutAndServiceAndTheNewest64) {
  StoppedRollouts stopped;
  EXPECT_EQ(stopped.stopped_by(1, "web"), nullptr);
  stopped.remember(1, "web", "abort");
  stopped.remember(1, "web", "rollback");
  ASSERT_NE(stopped.stopped_by(1, "web"), nullptr);
  EXPECT_EQ(*stopped.stopped_by(1, "web"), "abort");
  EXPECT_EQ(stopped.stopped_by(1, "db"), nullptr);
  EXPECT_EQ(stopped.stopped_by(2, "web"), nullptr);
  for (uint64_t id = 2; id <= 64; ++id) stopped.remember(id, "web", "abort");
  EXPECT_NE(stopped.stopped_by(1, "web"), nullptr) << "64 kept";
  stopped.remember(65, "web", "rollback");
  EXPECT_EQ(stopped.stopped_by(1, "web"), nullptr) << "the oldest goes";
  ASSERT_NE(stopped.stopped_by(65, "web"), nullptr);
  EXPECT_EQ(*stopped.stopped_by(65, "web"), "rollback");
}

}  // namespace
}  // namespace gantry::agent
