// Completing a chunked download, shared by every driver.
#pragma once

#include <string>

#include "agent/driver/driver.h"
#include "common/util/expected.h"

namespace gantry::agent {

// Checks the downloaded file `part` against the release's size and sha256 (deleting it on a
// mismatch), then renames it to `done` and fsyncs the directory holding both.
Status verify_and_commit_download(const ReleaseId& r, const std::string& part, const std::string& done);

}  // namespace gantry::agent
