// A small, paranoid extractor for release archives (uncompressed ustar / GNU tar).
//
// It is a pure function of the archive bytes and a target directory: it never
// writes outside `target_dir`, never follows a symlink while creating entries,
// and refuses anything it does not understand. A later issue fuzzes it.
#pragma once

#include <cstdint>
#include <istream>
#include <string>

#include "common/util/expected.h"

namespace gantry::agent {

struct TarLimits {
  uint64_t archive_size = UINT64_MAX;     // declared size of the whole archive; entries may not exceed it
  uint64_t max_total_bytes = 4ULL << 30;  // sum of extracted file sizes
  uint64_t max_entries = 100000;
  size_t max_path = 4096;
  bool fsync = true;  // fsync every file and directory written
};

struct TarStats {
  uint64_t files = 0;
  uint64_t dirs = 0;
  uint64_t symlinks = 0;
  uint64_t bytes = 0;
};

// Extracts the archive read from `in` into the existing, empty directory `target_dir`.
// Accepts regular files, directories and symlinks whose target stays inside `target_dir`;
// refuses absolute paths, `..`, NULs, hardlinks, devices, fifos, truncated or corrupt input.
// On error, whatever was written lies inside `target_dir`; the caller removes it.
Expected<TarStats> extract_tar(std::istream& in, const std::string& target_dir, const TarLimits& limits = {});

// Convenience wrapper: extracts the archive file at `archive_path` (its size is the declared size).
Expected<TarStats> extract_tar_file(const std::string& archive_path, const std::string& target_dir,
                                    TarLimits limits = {});

}  // namespace gantry::agent
