// How a release is installed, switched to and restarted for one service. The `binary`
// driver is the only one today; a `container` driver (image by digest) fits the same steps.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "common/util/expected.h"

namespace gantry::agent {

// What identifies a release on disk.
struct ReleaseId {
  std::string service;
  std::string version;
  std::string sha256;
  uint64_t size = 0;
};

// A restart made ready before the swap and started right after it (Driver::prepare_restart).
// Destroyed before start(), nothing of it runs.
class PreparedRestart {
 public:
  virtual ~PreparedRestart() = default;
  // `current` is switched: the restart begins (the main loop calls this; it does not block).
  virtual void start() = 0;
  // After start(), on the worker thread: until the restart is done; as Driver::restart().
  virtual Status finish() = 0;
};

class Driver {
 public:
  virtual ~Driver() = default;

  // The version `current` points at, from disk (the truth after any crash); empty if none.
  virtual Expected<std::string> current_version() = 0;
  // True iff `version` is installed and records the same digest.
  virtual bool has_release(const ReleaseId& r) = 0;
  // Refuses when `version` is installed with another digest ("version V already installed with another digest").
  virtual Status check_installable(const ReleaseId& r) = 0;
  // Where the artifact is downloaded to while incomplete, and once complete and checked.
  virtual std::string partial_artifact_path(const std::string& sha256) = 0;
  virtual std::string artifact_path(const std::string& sha256) = 0;
  // Checks size and digest of the downloaded partial artifact and moves it to artifact_path();
  // a mismatch deletes it ("digest mismatch"). `hashed_sha256`: the digest the fetcher computed
  // over the bytes as it wrote them (it already equals r.sha256); empty: read the file and hash it.
  virtual Status finish_download(const ReleaseId& r, const std::string& hashed_sha256 = "") = 0;
  // Extracts the downloaded artifact into a fresh staging dir and renames it into place.
  virtual Status stage(const ReleaseId& r) = 0;
  // Atomically points `current` at `version` (rename(2) of a symlink) and makes it durable
  // (fsync of the dir): switch_current() then sync_current().
  Status activate(const std::string& version) {
    if (Status st = switch_current(version); !st.ok()) return st;
    return sync_current();
  }
  // The two parts of activate(): switch_current() makes the switch visible (the rename),
  // sync_current() durable (the fsync of the dir). On an update the agent runs the restart
  // command between them — the fsync's disk flush then overlaps the command — and records no
  // result before sync_current() succeeded.
  virtual Status switch_current(const std::string& version) = 0;
  virtual Status sync_current() = 0;
  // Restarts the service on whatever `current` points at; non-zero exit or timeout is an error.
  virtual Status restart(const std::string& version) = 0;
  // restart(version) in two parts: made ready now, begun on start() once the swap is made. The
  // binary driver starts the restart command's shell here, so its start-up overlaps the order's
  // journal record and the swap (RealProcessRunner::prepare_shell); by default nothing happens
  // before start() and finish() is restart(). The Driver must outlive the result.
  virtual std::unique_ptr<PreparedRestart> prepare_restart(const std::string& version);
  // Removes releases beyond `retain` (newest kept), never one named in `keep`.
  virtual Status prune(uint32_t retain, const std::set<std::string>& keep) = 0;
  // Removes leftovers of interrupted work (staging dirs, temp links); safe at start-up.
  virtual Status cleanup() = 0;
  // Removes every downloaded file of this service but release `sha256`'s partial download (kept
  // so a fetch can resume) and, when `keep_complete`, its completed artifact; a failed download
  // or a refused release leaves nothing else behind. A driver without downloads keeps nothing.
  virtual Status prune_downloads(const std::string& sha256, bool keep_complete) {
    (void)sha256;
    (void)keep_complete;
    return Status::Ok();
  }
};

}  // namespace gantry::agent
