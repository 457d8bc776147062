// What the artifact server and the prefetch pass ask of whoever fetches the artifacts this
// coordinator lacks (from peer coordinators: peer_artifact_fetcher.h). A small interface, so
// neither depends on the fetcher's worker thread and sockets.
#pragma once

#include <functional>
#include <string>

#include "common/util/expected.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

class MissingArtifacts {
 public:
  // A fetch that ended: the artifact with this sha256 is now in the artifact dir (ok), or not.
  using Listener = std::function<void(const std::string& sha256, const Status& result)>;
  virtual ~MissingArtifacts() = default;
  // Fetch the artifact of release `r` into the artifact dir, unless one is queued or under way
  // for that sha256 (then true and nothing more). False when it cannot be queued (queue full).
  virtual bool want(const store::ReleaseRow& r) = 0;
  // Whether a fetch of that sha256 is queued or under way.
  virtual bool fetching(const std::string& sha256) const = 0;
  // `f` is told of every fetch that ends, by deliver(), on deliver()'s thread.
  virtual void subscribe(Listener f) = 0;
  // Tells the listeners of the fetches that ended since the last call (on the caller's thread:
  // the coordinator's loop calls it every turn).
  virtual void deliver() = 0;
};

}  // namespace gantry::coordinator
