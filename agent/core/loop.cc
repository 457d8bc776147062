// Loop integration: tick() takes the worker's results, announces verifying, checks the fetch
// for stalls and starts the next queued order; next_deadline() tells the main loop when
// tick() must run at the latest.
#include "agent/core/agent.h"

#include <algorithm>

namespace gantry::agent {
namespace {

constexpr Millis kWorkPollMs = 100;

}  // namespace

void Agent::tick() {
  // Milestones first, then the job's result; bounded: a job posts a handful of milestones.
  for (int i = 0; i < 16; ++i) {
    auto r = worker_.take();
    if (!r) break;
    on_work_done(*r);
  }
  if (announce_verifying_at_ && clock_.now_ms() >= announce_verifying_at_) announce_verifying();
  if (fetcher_) {
    fetcher_->check(clock_.now_ms());
    if (fetcher_->state() == Fetcher::State::kFailed) fail_before_swap(fetcher_->error());
  }
  start_next();
}

Millis Agent::next_deadline() const {
  Millis now = clock_.now_ms();
  Millis d = now + 1000;
  if (worker_.busy()) d = std::min(d, now + kWorkPollMs);
  if (announce_verifying_at_) d = std::min(d, announce_verifying_at_);
  if (fetcher_) d = std::min(d, fetcher_->deadline());
  return d;
}

}  // namespace gantry::agent
