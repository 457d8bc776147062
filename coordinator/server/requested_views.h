// Views the HTTP endpoint serves on request (`/rollouts`: the history; `/rollouts/ID`: one
// rollout with its hosts, timelines and event log), built on the event loop, since only the
// loop reads the store and the executor, and handed to the HTTP thread as status_snapshot.h
// hands over /status. A request names a key; the loop builds each wanted key at its next turn
// and keeps the answer kMaxAgeMs, so the loop's work is bounded by the number of distinct views
// asked for, not by the number of pages asking: any number of pages showing rollout 7 cost one
// build of it per kMaxAgeMs. At most kMaxWanted keys wait at once (more: the request gets no
// view, 503) and kMaxKept are kept; a turn builds at most kBuildsPerTurn.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "common/util/clock.h"

namespace gantry::coordinator {

struct BuiltView {
  int status = 200;                         // 404: no such rollout
  std::shared_ptr<const std::string> body;  // JSON
  Millis built_at = 0;
};

class RequestedViews {
 public:
  // `build` runs on the loop's thread only and never throws; it gets a key given to get().
  using Builder = std::function<BuiltView(const std::string& key)>;
  RequestedViews(const Clock& clock, Builder build);

  // HTTP side (any thread): the view of `key`, built at most kMaxAgeMs ago, waiting at most
  // kWaitMs for the loop to build it; nullptr if it did not (the loop is busy, or too many
  // views are wanted at once).
  std::shared_ptr<const BuiltView> get(const std::string& key);

  // Loop side, once per turn: builds the views asked for since the last turn.
  void on_loop_turn();

  uint64_t builds() const;  // views built so far (tests, logs)

  static constexpr Millis kMaxAgeMs = 2000;
  static constexpr Millis kWaitMs = 2000;
  static constexpr size_t kMaxWanted = 16;
  static constexpr size_t kMaxKept = 64;
  static constexpr size_t kBuildsPerTurn = 4;

 private:
  const Clock& clock_;
  Builder build_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> wanted_;
  std::map<std::string, std::shared_ptr<const BuiltView>> kept_;
  uint64_t builds_ = 0;
};

}  // namespace gantry::coordinator
