// One background thread at a time for the agent's long blocking steps (digest, extract,
// restart, verify). Results come back to the main loop through a mutex-protected slot and
// an eventfd the main loop polls, so sockets and state stay on the main thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <condition_variable>
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
};

class Worker {
 public:
  using Job = std::function<Status(const std::atomic<bool>& cancelled)>;

  Worker();
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts `job` on a new thread; only one job runs at a time (returns false if busy).
  bool run(std::string step, Job job);
  // True from run() until take() returned the job's result.
  bool busy() const { return busy_; }
  // The finished job's result, if any; joins its thread. Non-blocking.
  std::optional<WorkResult> take();
  // Blocks until a result is ready or timeout_ms passed; true if ready.
  bool wait(Millis timeout_ms);
  // Readable while a result is waiting; for zmq::poll.
  int wake_fd() const { return efd_; }
  // Asks the running job to stop early and waits for it (shutdown).
  void cancel_and_join();

 private:
  int efd_ = -1;
  bool busy_ = false;
  std::thread thread_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<WorkResult> result_;
};

}  // namespace gantry::agent
