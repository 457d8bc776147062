// The status snapshot's pacing (coordinator/server/status_snapshot.h), on a fake clock: a build
// spaces out the next by ten times its cost, except a build that failed (it waited out the
// store's deadline rather than working), which must not keep serving its error for long.
#include "coordinator/server/status_snapshot.h"

#include <gtest/gtest.h>

#include "common/util/clock.h"

namespace gantry::coordinator {
namespace {

struct Fixture {
  FakeClock clock;
  ChangeFlag changed;
  Millis cost = 0;
  bool fail = false;
  int builds = 0;
  StatusSnapshot snap{clock, changed, [this] {
                        ++builds;
                        clock.advance(cost);
                        Published p;
                        p.failed = fail;
                        p.status_json = fail ? R"({"error":"etcd Range: Deadline Exceeded"})" : R"({"role":"leader"})";
                        return p;
                      }};
};

TEST(StatusSnapshot, ASlowBuildSpacesOutTheNextByTenTimesItsCost) {
  Fixture f;
  f.cost = 100;
  f.snap.publish();
  ASSERT_EQ(f.builds, 1);
  f.clock.advance(500);
  f.snap.publish();
  EXPECT_EQ(f.builds, 1) << "within 10 x 100 ms of the last build";
  f.clock.advance(500);
  f.snap.publish();
  EXPECT_EQ(f.builds, 2);
}

TEST(StatusSnapshot, AFailedBuildDoesNotHoldTheNextBack) {
  Fixture f;
  f.cost = 2000;  // the store's call deadline, waited out
  f.fail = true;
  f.snap.publish();
  ASSERT_EQ(f.builds, 1);
  EXPECT_TRUE(f.snap.current()->failed);
  f.fail = false;
  f.cost = 5;
  f.clock.advance(300);
  f.snap.publish();
  EXPECT_EQ(f.builds, 2) << "held back for 10 x 2000 ms: the error would be served for 20 s";
  EXPECT_FALSE(f.snap.current()->failed);
  EXPECT_EQ(f.snap.current()->status_json, R"({"role":"leader"})");
}

}  // namespace
}  // namespace gantry::coordinator
