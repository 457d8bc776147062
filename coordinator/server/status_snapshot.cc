#include "coordinator/server/status_snapshot.h"

#include <algorithm>
#include <chrono>

namespace gantry::coordinator {

StatusSnapshot::StatusSnapshot(const Clock& clock, ChangeFlag& changed, Builder build)
    : clock_(clock), changed_(changed), build_(std::move(build)) {}

void StatusSnapshot::on_loop_turn() {
  const Millis now = clock_.now_ms();
  const bool watched = now - http_read_at_.load(std::memory_order_relaxed) < kWatchedMs;
  if (refresh_wanted_.load() || (watched && (changed_.is_set() || now - last_publish_ >= kStatusRefreshMs))) publish();
}

void StatusSnapshot::publish() {
  Millis now = clock_.now_ms();
  if (now - last_publish_ < std::max<Millis>(250, 10 * last_publish_cost_)) return;
  last_publish_ = now;
  changed_.take();
  // Cleared before building: a request that asks while this one is built gets the next one.
  refresh_wanted_.store(false);
  auto next = std::make_shared<const Published>(build_());
  // A build that failed (waiting out the store's deadline, not working) would otherwise hold the
  // next one back for ten times that wait, serving the error meanwhile.
  last_publish_cost_ = next->failed ? 0 : clock_.now_ms() - now;
  {
    std::lock_guard<std::mutex> lk(mu_);
    published_ = std::move(next);
    published_at_ = now;
    ++published_seq_;
  }
  cv_.notify_all();
}

std::shared_ptr<const Published> StatusSnapshot::current() const {
  std::lock_guard<std::mutex> lk(mu_);
  return published_;
}

std::shared_ptr<const Published> StatusSnapshot::fresh() {
  const Millis now = clock_.now_ms();
  const Millis last_read = http_read_at_.exchange(now, std::memory_order_relaxed);
  std::unique_lock<std::mutex> lk(mu_);
  // While nobody reads, events do not rebuild the snapshot, so after a quiet spell its content
  // can be older than its age says (the hosts that said hello since, a rollout started since):
  // the first request then asks for a new one too, as does any that finds it older than the
  // age limit. It waits for a snapshot built after it asked, or kRefreshWaitMs.
  if (now - last_read >= kWatchedMs || now - published_at_ > kStatusRefreshMs) {
    const uint64_t seen = published_seq_;
    refresh_wanted_.store(true);
    cv_.wait_for(lk, std::chrono::milliseconds(kRefreshWaitMs), [&] { return published_seq_ != seen; });
  }
  return published_;
}

}  // namespace gantry::coordinator
