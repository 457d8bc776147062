// The standby's prefetch pass: every few seconds, the releases the store names whose artifact
// this coordinator lacks are fetched from peers (MissingArtifacts), a few per pass, so a standby
// holds every release within seconds of its upload and can serve agents the moment it leads.
// A fetch that failed is tried again after a backoff (doubling, capped). With ArtifactCopies,
// each artifact found here (or fetched) is recorded as held by this coordinator, and each one
// missing as not held, once per run: the leader acknowledges an upload once every coordinator
// holds it. Called from one thread (the coordinator's loop); reads no clock of its own.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/util/clock.h"
#include "coordinator/server/artifact_copies.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/missing_artifacts.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

class PeerPrefetch {
 public:
  struct Options {
    Millis period_ms = 2000;          // between passes
    size_t max_per_pass = 4;          // fetches asked for per pass
    Millis retry_ms = 5000;           // after a failed fetch, first wait
    Millis max_retry_ms = 5 * 60000;  // the wait doubles up to this
  };
  PeerPrefetch(store::Store& store, const ArtifactStore& artifacts, MissingArtifacts& fetcher, Options options);
  PeerPrefetch(store::Store& store, const ArtifactStore& artifacts, MissingArtifacts& fetcher);
  // Where this coordinator records the artifacts it holds; unset: nowhere. Before the first tick.
  void set_copies(ArtifactCopies* copies) { copies_ = copies; }

  // One pass if one is due at `now` (monotonic ms); otherwise nothing.
  void tick(Millis now);
  // A pass now: the releases listed, those missing here asked for (at most max_per_pass new).
  void prefetch_missing(Millis now);

  // As of the last pass: artifacts the store names that are not here (fetching or not).
  size_t missing() const { return missing_; }
  Millis next_pass() const { return next_pass_; }

 private:
  struct Backoff {
    Millis next_try = 0;
    Millis wait = 0;
  };
  store::Store& store_;
  const ArtifactStore& artifacts_;
  MissingArtifacts& fetcher_;
  const Options options_;
  Millis next_pass_ = 0;
  Millis last_now_ = 0;
  size_t missing_ = 0;
  // Records this coordinator's copies (and its lacks) not recorded yet in this run, together; a
  // failed record is tried again at the next pass.
  void record(const std::vector<std::string>& held, const std::vector<std::string>& lacking);

  std::map<std::string, Backoff> failed_;  // sha256 -> when to try again
  ArtifactCopies* copies_ = nullptr;
  std::set<std::string> recorded_held_, recorded_lacking_;
};

}  // namespace gantry::coordinator
