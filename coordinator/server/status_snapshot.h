// The hand-off of /status and /metrics from the event loop to the HTTP thread: the loop builds
// an immutable snapshot and swaps it in under a mutex held only for the swap; the HTTP thread
// takes the current one. Neither waits on the other's work: building happens outside the lock,
// and a request that finds the snapshot stale asks for a new one and waits for it at most
// kRefreshWaitMs (then serves the one it has).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/util/clock.h"
#include "coordinator/server/change_flag.h"

namespace gantry::coordinator {

// What /status and /metrics serve.
struct Published {
  std::string status_json;
  std::string metrics_text;
  // The status could not be built (status_json says why; e.g. the store did not answer in time).
  // Its cost does not space out the next build: it is tried again at the next change or refresh.
  bool failed = false;
};

class StatusSnapshot {
 public:
  using Builder = std::function<Published()>;
  // `build` runs on the loop's thread only; `changed` is the loop's change flag.
  StatusSnapshot(const Clock& clock, ChangeFlag& changed, Builder build);

  // Loop side, once per turn. Snapshots are for readers of /status and /metrics: none is built
  // while nobody reads (a large fleet's snapshot is a noticeable part of the loop's time), one is built at once
  // when asked for, and while watched one is rebuilt on a change or when older than
  // kStatusRefreshMs.
  void on_loop_turn();
  // Builds one now (bounded: at most every 250 ms and ~10% of the loop's time).
  void publish();

  // HTTP side (any thread). The snapshot as it is.
  std::shared_ptr<const Published> current() const;
  // The snapshot, first asking the loop for a fresh one if it is older than the refresh period
  // (or nobody read for a while), waiting at most kRefreshWaitMs for it.
  std::shared_ptr<const Published> fresh();

  static constexpr Millis kStatusRefreshMs = 5000;  // age limit when only heartbeats arrive
  static constexpr Millis kWatchedMs = 60000;       // a read in this window keeps snapshots built
  static constexpr Millis kRefreshWaitMs = 2000;

 private:
  const Clock& clock_;
  ChangeFlag& changed_;
  Builder build_;
  Millis last_publish_ = -1000000;  // loop thread only
  Millis last_publish_cost_ = 0;    // ms the last snapshot took to build
  std::atomic<Millis> http_read_at_{-1000000};
  std::atomic<bool> refresh_wanted_{false};
  mutable std::mutex mu_;  // guards the three below, held only to swap or read them
  std::condition_variable cv_;
  std::shared_ptr<const Published> published_ = std::make_shared<const Published>();
  Millis published_at_ = -1000000;
  uint64_t published_seq_ = 0;  // snapshots built so far
};

}  // namespace gantry::coordinator
