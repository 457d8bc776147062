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
  // This coordinator holds the artifacts `held` (by sha256: each file in place, checked) and not
  // those `lacking` (a record left from before its disk was lost is taken back). Recorded
  // together, in as few writes as the store allows; on an error some may be recorded.
  virtual Status record(const std::vector<std::string>& held, const std::vector<std::string>& lacking) = 0;
  // The coordinators registered now, split by whether they recorded holding it.
  virtual Expected<Holders> holders(const std::string& sha256) = 0;
};

}  // namespace gantry::coordinator
