// One background thread for the agent's long blocking steps (digest, extract, restart,
// verify), one job at a time. The thread is started by the first job and then waits for the
// next one (no thread per job). Results come back to the main loop through a mutex-protected
// slot and an eventfd the main loop polls, so sockets and state stay on the main thread.
// A job may also post milestones (e.g. "restart done" in a restart + verify job): the main loop
// takes them in order before the job's result, while the job goes on without waiting for it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::agent {

struct WorkResult {
  std::string step;
  Status status;
  int64_t job_us = 0;  // how long the job ran on its thread (steady clock; diagnostics only)
  bool final = true;   // false: a milestone the job posted (Worker::milestone); the job goes on
  int64_t at_us = 0;   // when it was posted (steady clock, microseconds; diagnostics only)
};

class Worker {
 public:
  using Job = std::function<Status(const std::atomic<bool>& cancelled)>;

  Worker();
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts `job` on the worker thread; only one job runs at a time (returns false if busy).
  bool run(std::string step, Job job);
  // True from run() until take() returned the job's (final) result.
  bool busy() const { return busy_; }
  // Called by the running job, on the worker thread: posts a milestone (final = false) for the
  // main loop and returns at once. job_us: how long the job has run so far.
  void milestone(std::string step, Status status, int64_t job_us);
  // The oldest milestone, else the finished job's result, if any. Non-blocking; call until
  // empty (the wake fd stays readable while anything is left).
  std::optional<WorkResult> take();
  // Blocks until a milestone or result is ready or timeout_ms passed; true if ready.
  bool wait(Millis timeout_ms);
  // Readable while a milestone or result is waiting; for zmq::poll.
  int wake_fd() const { return efd_; }
  // Asks the running job to stop early, waits for it and stops the thread (shutdown). A later
  // run() starts a new thread.
  void cancel_and_join();

 private:
  struct Pending {
    std::string step;
    Job job;
  };
  void loop();

  int efd_ = -1;
  bool busy_ = false;
  std::thread thread_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;      // a result is ready
  std::condition_variable job_cv_;  // a job or stop is waiting for the thread
  std::optional<Pending> job_;
  bool stop_ = false;
  std::deque<WorkResult> milestones_;
  std::optional<WorkResult> result_;
};

}  // namespace gantry::agent
