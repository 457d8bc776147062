// Which coordinators of an installation hold a release's artifact (docs/HIGH_AVAILABILITY.md,
// "Releases on every coordinator"). Each coordinator records the artifacts it holds (uploaded,
// or copied from a peer and checked); the leader acknowledges an upload once every registered
// coordinator holds it. A small interface, so the upload command and the prefetch pass do not
// depend on etcd; unset (SQLite: one coordinator), an upload is acknowledged once it is stored.
#pragma once

#include <string>
#include <vector>

#include "common/util/expected.h"

namespace gantry::coordinator {

class ArtifactCopies {
 public:
  struct Holders {
    std::vector<std::string> on;           // registered coordinators that hold it, by name
    std::vector<std::string> waiting_for;  // registered coordinators that do not (yet)
  };
  virtual ~ArtifactCopies() = default;
  // This coordinator holds the artifact with this sha256: its file is in place, checked.
  virtual Status record_held(const std::string& sha256) = 0;
  // This coordinator does not hold it (a record left from before its disk was lost).
  virtual Status record_lacking(const std::string& sha256) = 0;
  // The coordinators registered now, split by whether they recorded holding it.
  virtual Expected<Holders> holders(const std::string& sha256) = 0;
};

}  // namespace gantry::coordinator
