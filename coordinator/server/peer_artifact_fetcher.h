// Fetching the artifacts this coordinator lacks from peer coordinators (docs/HIGH_AVAILABILITY.md,
// "Releases on every coordinator"). The release rows are shared (the store); the files are
// each coordinator's own. A fetch reads the artifact chunk by chunk from one peer into a temp
// file in the artifact dir, checks its size and sha256 against the release row, and only then
// renames it into place; a peer that lacks it, fails or lies is left for the next one, and what
// it sent is deleted. All of it runs on one worker thread, so a slow peer never stalls the
// coordinator's loop; the loop queues fetches (want) and learns of the ended ones (deliver).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "coordinator/server/metrics.h"
#include "coordinator/server/missing_artifacts.h"
#include "coordinator/server/peer_chunk_source.h"
#include "coordinator/server/peer_endpoints.h"

namespace gantry::coordinator {

class PeerArtifactFetcher final : public MissingArtifacts {
 public:
  // The largest release an operator may upload (release.upload: 16 GiB).
  static constexpr uint64_t kMaxArtifactBytes = uint64_t{1} << 34;
  struct Options {
    uint32_t chunk_bytes = 1024 * 1024;  // per request; the command's limit
    int attempts_per_chunk = 3;          // at one peer (timeouts, refusals), then the next peer
    size_t max_queued = 256;             // fetches waiting; want() refuses more
  };
  // One artifact to fetch, as the loop hands it to the worker.
  struct Job {
    std::string sha256;
    uint64_t size = 0;
    std::string what;                    // "<service> <version>", for log lines
    std::vector<std::string> endpoints;  // peers, in the order tried (the worker asks PeerEndpoints)
  };

  // Artifacts go to `artifact_dir` (ArtifactStore's: <dir>/<sha256>). Temp files a fetch cut
  // short by a crash left there (<sha256>.peer) are removed; then the worker starts.
  PeerArtifactFetcher(std::string artifact_dir, PeerEndpoints& peers, std::unique_ptr<ChunkSource> source,
                      Options options);
  PeerArtifactFetcher(std::string artifact_dir, PeerEndpoints& peers, std::unique_ptr<ChunkSource> source);
  // Stops the worker: a fetch under way ends at its next chunk (or wait slice) and leaves nothing.
  ~PeerArtifactFetcher() override;
  PeerArtifactFetcher(const PeerArtifactFetcher&) = delete;
  PeerArtifactFetcher& operator=(const PeerArtifactFetcher&) = delete;

  // Also false for a row whose sha256 is not 64 lowercase hex digits or whose size is 0 or
  // above kMaxArtifactBytes (logged): rows may come from outside (etcd).
  bool want(const store::ReleaseRow& r) override;
  // Counts every ended fetch there (gantry_peer_artifact_*), in deliver(); unset: not counted.
  void set_metrics(Metrics* metrics) { metrics_ = metrics; }
  bool fetching(const std::string& sha256) const override { return wanted_.count(sha256) > 0; }
  void subscribe(Listener f) override { listeners_.push_back(std::move(f)); }
  void deliver() override;

  // Waits up to `timeout_ms` until every fetch queued so far has ended (not delivered: call
  // deliver()). For tests and for an orderly shutdown; true if they all ended.
  bool wait_idle(Millis timeout_ms);

  // One fetch, on the calling thread: what the worker runs for each job. Ok when the file
  // <dir>/<sha256> is in place (fetched now, or already there).
  static Status fetch(const std::string& artifact_dir, const Job& job, ChunkSource& source, const Options& options,
                      const std::atomic<bool>& cancel);

 private:
  void work();

  const std::string dir_;
  PeerEndpoints& peers_;
  std::unique_ptr<ChunkSource> source_;  // worker thread only
  const Options options_;
  std::vector<Listener> listeners_;  // loop thread
  Metrics* metrics_ = nullptr;       // loop thread
  std::set<std::string> wanted_;     // loop thread: queued or under way, not yet delivered

  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Job> queue_;  // guarded by mu_
  struct Ended {
    std::string sha256;
    uint64_t size;
    Status result;
  };
  std::vector<Ended> ended_;  // guarded by mu_
  bool running_job_ = false;  // guarded by mu_
  std::atomic<bool> stop_{false};
  std::thread worker_;
};

}  // namespace gantry::coordinator
