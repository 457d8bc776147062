// The on-disk layout every driver shares under a service's install root:
// downloads/, releases/<version>/ and the `current` symlink.
#pragma once

#include <string>

#include "agent/driver/driver.h"
#include "common/util/expected.h"

namespace gantry::agent {

// Checks the downloaded file `part` against the release's size and sha256 (deleting it on a
// mismatch), then renames it to `done` and fsyncs the directory holding both.
// The version `<root>/current` points at ("" when nothing is installed yet); an Error when the
// link is unreadable or points somewhere that is not a release.
Expected<std::string> read_current_version(const std::string& root);

Status verify_and_commit_download(const ReleaseId& r, const std::string& part, const std::string& done);

}  // namespace gantry::agent
