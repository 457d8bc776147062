// The rule by which an agent (and the fleet simulator) gives its connection up:
// common/transport/liveness.h.
#include "common/transport/liveness.h"

#include <gtest/gtest.h>

namespace gantry::transport {
namespace {

TEST(TransportLiveness, WelcomedConnectionUsesTheAnnouncedPeriod) {
  EXPECT_EQ(silence_limit_ms(true, 10000, 3, 0), 30000);
  // A welcome ends the pre-welcome rule whatever happened before it.
  EXPECT_EQ(silence_limit_ms(true, 10000, 3, 5), 30000);
}

TEST(TransportLiveness, FirstUnwelcomedConnectionUsesThePlainLimit) {
  EXPECT_EQ(silence_limit_ms(false, 1000, 3, 0), 3000);
}

TEST(TransportLiveness, SilentConnectionsInARowAreKeptLongerUpToACap) {
  int64_t prev = silence_limit_ms(false, 1000, 3, 0);
  for (int k = 1; k <= kMaxSilentConnectionDoublings; ++k) {
    int64_t cur = silence_limit_ms(false, 1000, 3, k);
    EXPECT_EQ(cur, 2 * prev) << k;
    prev = cur;
  }
  EXPECT_EQ(prev, 3000 << kMaxSilentConnectionDoublings);
  for (int k = kMaxSilentConnectionDoublings + 1; k < kMaxSilentConnectionDoublings + 20; ++k)
    EXPECT_EQ(silence_limit_ms(false, 1000, 3, k), prev) << k;
  EXPECT_EQ(silence_limit_ms(false, 1000, 3, -1), 3000);
}

}  // namespace
}  // namespace gantry::transport
