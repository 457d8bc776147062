// The on-disk layout every driver shares under a service's install root:
// downloads/, releases/<version>/ and the `current` symlink.
#pragma once

#include <string>
#include <vector>

#include "agent/driver/driver.h"
#include "common/util/expected.h"

namespace gantry::agent {

// Checks the downloaded file `part` against the release's size and sha256 (deleting it on a
// mismatch), then renames it to `done` and fsyncs the directory holding both.
// The version `<root>/current` points at ("" when nothing is installed yet); an Error when the
// link is unreadable or points somewhere that is not a release.
Expected<std::string> read_current_version(const std::string& root);

// Checks the size and sha256 of the downloaded `part` against r and renames it to `done` (the
// dir fsynced); a mismatch deletes it ("digest mismatch"). `hashed_sha256`, when not empty, is the
// digest of the file's bytes computed while they were written, used instead of reading it back.
Status verify_and_commit_download(const ReleaseId& r, const std::string& part, const std::string& done,
                                  const std::string& hashed_sha256 = "");

// Removes every entry of `<root>/downloads` except the files named `keep` (names, not paths).
Status prune_downloads_except(const std::string& root, const std::vector<std::string>& keep);

}  // namespace gantry::agent
