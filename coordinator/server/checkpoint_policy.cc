#include "coordinator/server/checkpoint_policy.h"

#include "common/util/log.h"

namespace gantry::coordinator {

void CheckpointAtRest::tick(Millis now, bool rollouts_active) {
  if (rollouts_active) {
    backlog_seen_ = -1;
    return;
  }
  const int64_t backlog = store_.wal_backlog();
  if (backlog == 0) return;
  if (backlog != backlog_seen_) {  // written since the last look: the quiet period starts over
    backlog_seen_ = backlog;
    quiet_since_ = now;
    return;
  }
  if (now - quiet_since_ < kQuietMs) return;
  quiet_since_ = now;  // a failed or unfinished one is tried again a quiet period later
  const int64_t t0 = steady_us();
  if (auto s = store_.checkpoint(); !s.ok()) {
    log::get("coordinator")->warn("store: WAL checkpoint at rest failed: {}", s.error().message);
    return;
  }
  log::get("coordinator")
      ->info("store: WAL checkpointed at rest ({} pages, {} ms)", backlog, (steady_us() - t0) / 1000);
  backlog_seen_ = -1;
}

}  // namespace gantry::coordinator
