// Crash-safe file operations: the only way Gantry writes state that must survive a crash.
#pragma once

#include <string>

#include "common/util/expected.h"

namespace gantry::fs {

// Writes `data` to `path` atomically: temp file in the same dir, fsync, rename, fsync dir.
// On any error (EIO, ENOSPC, ...) the old file is left untouched and the error is returned.
Status write_file_atomic(const std::string& path, const std::string& data, int mode = 0644);

// fsync of a directory, so a rename or create inside it is durable.
Status fsync_dir(const std::string& dir);

// Points symlink `link` at `target` atomically (symlink to a temp name, rename(2) over, fsync dir).
// With `sync_dir` false the fsync of the directory is left to the caller (fsync_dir), who may
// overlap it with other work; the switch is visible at once, durable only after that fsync.
Status replace_symlink(const std::string& link, const std::string& target, bool sync_dir = true);

Expected<std::string> read_file(const std::string& path, uint64_t max_bytes = 64 * 1024 * 1024);

// Target of a symlink, or an Error (not_found when it does not exist).
Expected<std::string> read_symlink(const std::string& link);

// mkdir -p with the given mode for created directories.
Status make_dirs(const std::string& path, int mode = 0755);

// rm -rf; a missing path is not an error.
Status remove_all(const std::string& path);

bool exists(const std::string& path);

// Directory holding `path` ("." when none).
std::string dirname(const std::string& path);

}  // namespace gantry::fs
