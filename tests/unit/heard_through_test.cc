// HeardThrough (coordinator/server/heard_through.h): up to when the loop has read its agents'
// input, the time hosts' silence is measured at. Every time is given; no clock, no sleep.
#include "coordinator/server/heard_through.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace gantry::coordinator {
namespace {

// One turn's wait, then up to when the loop has heard.
Millis heard_after(HeardThrough& h, Millis asked, Millis timeout_ms, Millis returned, bool listening) {
  h.waited(asked, timeout_ms, returned, listening);
  return h.through();
}

TEST(HeardThrough, AWaitThatReturnedIsHeardThroughItsReturnWhateverTheTurnTakesAfter) {
  HeardThrough h(1000, 200, 3000);
  EXPECT_EQ(h.through(), 1000);
  EXPECT_EQ(heard_after(h, /*asked=*/1000, /*timeout=*/100, /*returned=*/1040, /*listening=*/true), 1040);
  // The turn then stalls for 2.5 s in a store write: still heard through 1040 only, until the
  // next wait returns and its reads are done.
  EXPECT_EQ(heard_after(h, 3540, 0, 3540, true), 3540);
}

TEST(HeardThrough, ReadsStoppedAtTheirBudgetHoldItBackByAtMostTheBacklogBound) {
  HeardThrough h(0, 200, 3000);
  h.waited(0, 100, 50, true);
  h.left_unread();
  EXPECT_EQ(h.through(), 0);  // never before what was already heard
  // The next turn's wait and complete reads move it, past the incomplete one.
  EXPECT_EQ(heard_after(h, 60, 0, 61, true), 61);
  // A peer keeps the sockets full: every turn stops at the budget, both drains (the agents'
  // socket and the datagrams). Judgments lag by the bound, not more, and still move.
  for (Millis t = 100; t <= 10000; t += 100) {
    h.waited(t, 0, t, true);
    h.left_unread();
    h.left_unread();
    EXPECT_EQ(h.through(), std::max<Millis>(61, t - 3000)) << t;
  }
}

TEST(HeardThrough, AWaitWhileTheAgentsWereHeldBackMovesNothing) {
  HeardThrough h(0, 200, 3000);
  EXPECT_EQ(heard_after(h, 0, 10, 10, /*listening=*/false), 0);
  EXPECT_EQ(heard_after(h, 10, 10, 12, true), 12);
}

TEST(HeardThrough, AWaitReturningFarPastItsTimeoutIsHeardThroughItsLatestOrdinaryReturnOnly) {
  HeardThrough h(0, 200, 3000);
  h.waited(0, 100, 90, true);
  // Asked for 100 ms, back 5 s later (the process was stopped): what arrived meanwhile may not
  // be queued yet. Heard through 100 + 100 + 200 at most.
  EXPECT_EQ(heard_after(h, 100, 100, 5100, true), 400);
  // Late by less than the margin is an ordinary wait.
  EXPECT_EQ(heard_after(h, 5110, 100, 5110 + 100 + 200, true), 5410);
  // A loop late at every wait (starved of CPU) still moves on, a turn behind.
  for (Millis t = 6000; t <= 9000; t += 1000) {
    EXPECT_EQ(heard_after(h, t, 100, t + 900, true), t + 300) << t;
  }
}

TEST(HeardThrough, NeverGoesBack) {
  HeardThrough h(500, 200, 3000);
  h.waited(100, 0, 200, true);  // a turn timed before the start (a clock read early)
  EXPECT_EQ(h.through(), 500);
  EXPECT_EQ(heard_after(h, 600, 0, 600, true), 600);
}

}  // namespace
}  // namespace gantry::coordinator
