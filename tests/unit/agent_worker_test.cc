// The agent's worker thread: milestones a job posts reach the main loop in order, before the
// job's result, and the wake fd is readable exactly while one of them waits.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "agent/core/worker.h"

using namespace gantry;
using namespace gantry::agent;

namespace {

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST(AgentWorker, MilestoneComesFirstAndTheJobGoesOnWithoutWaitingForIt) {
  Worker w;
  std::atomic<bool> release{false};
  ASSERT_TRUE(w.run("job", [&](const std::atomic<bool>& cancelled) -> Status {
    w.milestone("half", Status::Ok(), 1);
    // Bounded wait for the test to let it finish (10 s).
    for (int i = 0; i < 10000 && !release && !cancelled; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return make_error("done", "the job's own result");
  }));
  ASSERT_TRUE(w.wait(10000));
  ASSERT_TRUE(readable(w.wake_fd(), 0));
  auto m = w.take();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->step, "half");
  EXPECT_FALSE(m->final);
  EXPECT_TRUE(m->status.ok());
  EXPECT_EQ(m->job_us, 1);
  EXPECT_TRUE(w.busy()) << "the job is still running";
  EXPECT_FALSE(w.take()) << "nothing else yet";
  EXPECT_FALSE(readable(w.wake_fd(), 0)) << "drained once nothing is left";
  release = true;
  ASSERT_TRUE(readable(w.wake_fd(), 10000));
  auto r = w.take();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->step, "job");
  EXPECT_TRUE(r->final);
  ASSERT_FALSE(r->status.ok());
  EXPECT_EQ(r->status.error().code, "done");
  EXPECT_FALSE(w.busy());
  EXPECT_FALSE(readable(w.wake_fd(), 0));
}

TEST(AgentWorker, SeveralWaitingItemsKeepTheWakeFdReadableUntilAllAreTaken) {
  Worker w;
  ASSERT_TRUE(w.run("job", [&](const std::atomic<bool>&) -> Status {
    w.milestone("one", Status::Ok(), 1);
    w.milestone("two", make_error("restart", "exited with 4"), 2);
    return Status::Ok();
  }));
  // Each item is taken once the wake fd says something waits (each wait bounded, 10 s).
  std::vector<WorkResult> got;
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE(readable(w.wake_fd(), 10000)) << k;
    auto r = w.take();
    ASSERT_TRUE(r) << "readable means something waits: " << k;
    got.push_back(*r);
  }
  EXPECT_EQ(got[0].step, "one");
  EXPECT_FALSE(got[0].final);
  EXPECT_EQ(got[1].step, "two");
  EXPECT_FALSE(got[1].status.ok());
  EXPECT_FALSE(got[1].final);
  EXPECT_EQ(got[2].step, "job");
  EXPECT_TRUE(got[2].final);
  EXPECT_FALSE(w.busy());
  EXPECT_FALSE(readable(w.wake_fd(), 0));
  // The next job runs on the same thread and starts with no milestones left over.
  ASSERT_TRUE(w.run("next", [](const std::atomic<bool>&) { return Status::Ok(); }));
  ASSERT_TRUE(readable(w.wake_fd(), 10000));
  auto r = w.take();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->step, "next");
  EXPECT_TRUE(r->final);
}
