#include "agent/core/worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>

namespace gantry::agent {

Worker::Worker() : efd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

Worker::~Worker() {
  cancel_and_join();
  if (efd_ >= 0) ::close(efd_);
}

bool Worker::run(std::string step, Job job) {
  if (busy_) return false;
  busy_ = true;
  cancelled_ = false;
  {
    std::lock_guard lk(mu_);
    job_ = Pending{std::move(step), std::move(job)};
    stop_ = false;
    milestones_.clear();  // left by a job cancelled before they were taken
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  job_cv_.notify_one();
  return true;
}

void Worker::loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    job_cv_.wait(lk, [&] { return job_.has_value() || stop_; });
    if (!job_) return;  // stop, nothing left to run
    Pending p = std::move(*job_);
    job_.reset();
    lk.unlock();
    auto t0 = std::chrono::steady_clock::now();
    Status st = p.job(cancelled_);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    std::string step = std::move(p.step);
    p.job = nullptr;  // the job's captures go here, on this thread, before the result is posted
    lk.lock();
    result_ = WorkResult{std::move(step), std::move(st), us, true, steady_us()};
    cv_.notify_all();
    uint64_t one = 1;
    if (efd_ >= 0) (void)!::write(efd_, &one, sizeof one);
  }
}

void Worker::milestone(std::string step, Status status, int64_t job_us) {
  std::lock_guard lk(mu_);
  milestones_.push_back(WorkResult{std::move(step), std::move(status), job_us, false, steady_us()});
  cv_.notify_all();
  uint64_t one = 1;
  if (efd_ >= 0) (void)!::write(efd_, &one, sizeof one);
}

std::optional<WorkResult> Worker::take() {
  std::optional<WorkResult> r;
  std::lock_guard lk(mu_);
  if (!milestones_.empty()) {
    r = std::move(milestones_.front());
    milestones_.pop_front();
  } else if (result_) {
    r = std::move(result_);
    result_.reset();
    busy_ = false;
  } else {
    return std::nullopt;
  }
  // The eventfd is written under mu_ with every milestone and result: draining it here, under
  // mu_, once nothing is left keeps it readable exactly while something waits.
  if (milestones_.empty() && !result_) {
    uint64_t v;
    if (efd_ >= 0) (void)!::read(efd_, &v, sizeof v);
  }
  return r;
}

bool Worker::wait(Millis timeout_ms) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                      [&] { return result_.has_value() || !milestones_.empty(); });
}

void Worker::cancel_and_join() {
  cancelled_ = true;
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  job_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace gantry::agent
