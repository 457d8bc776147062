// The agent's fencing rule for coordinator epochs (agent/core/epoch_gate.h): pure decisions.
#include <gtest/gtest.h>

#include "agent/core/epoch_gate.h"

using namespace gantry::agent;

TEST(EpochGate, BeforeAnyEpochEverythingIsAcceptedAndTheFirstEpochRaises) {
  EXPECT_TRUE(check_epoch(0, 0).accept) << "an older coordinator, and none seen yet";
  EXPECT_FALSE(check_epoch(0, 0).raise);
  EXPECT_TRUE(check_epoch(0, 1).accept);
  EXPECT_TRUE(check_epoch(0, 1).raise);
  EXPECT_TRUE(check_epoch(0, UINT64_MAX).raise);
}

TEST(EpochGate, LowerEpochsAreRefusedEqualAcceptedHigherRaise) {
  EXPECT_FALSE(check_epoch(5, 4).accept);
  EXPECT_FALSE(check_epoch(5, 4).raise);
  EXPECT_FALSE(check_epoch(5, 0).accept) << "absent once an epoch was seen: refused";
  EXPECT_TRUE(check_epoch(5, 5).accept);
  EXPECT_FALSE(check_epoch(5, 5).raise);
  EXPECT_TRUE(check_epoch(5, 6).accept);
  EXPECT_TRUE(check_epoch(5, 6).raise);
  EXPECT_FALSE(check_epoch(UINT64_MAX, UINT64_MAX - 1).accept);
  EXPECT_TRUE(check_epoch(UINT64_MAX, UINT64_MAX).accept);
}

TEST(EpochGate, TheRefusalSaysBothEpochs) {
  EXPECT_EQ(stale_epoch_message(3, 7), "stale epoch 3 < 7");
  EXPECT_EQ(stale_epoch_message(0, 18446744073709551615ULL), "stale epoch 0 < 18446744073709551615");
}
