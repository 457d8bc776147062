// When the store's WAL is checkpointed. SQLite's own checkpoint is off
// (coordinator/store/store.h, kWalCapPages): a checkpoint costs three fsyncs (the WAL, the
// database, the restarted WAL's header), so it runs at rest: no rollout active and nothing
// written for kQuietMs. A rollout started later finds an empty WAL whose header is already
// synced: one fsync per batch transition (docs/GUARANTEES.md, 3).
#pragma once

#include <cstdint>

#include "common/util/clock.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

class CheckpointAtRest {
 public:
  static constexpr Millis kQuietMs = 10000;
  explicit CheckpointAtRest(store::Store& store) : store_(store) {}
  // Called from the loop's timers; `rollouts_active`: a rollout is running (never then).
  void tick(Millis now, bool rollouts_active);

 private:
  store::Store& store_;
  // The WAL backlog last seen and since when it has not changed (-1: a rollout was active, the
  // quiet period starts over).
  int64_t backlog_seen_ = -1;
  Millis quiet_since_ = 0;
};

}  // namespace gantry::coordinator
