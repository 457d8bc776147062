// SHA-256 of buffers and files, as lowercase hex, computed by Nettle (libnettle, from the
// distribution). Debian builds Nettle "fat": it picks the compression function for the CPU at
// load time, the x86-64 SHA extensions (SHA-NI) where the CPU has them, portable code elsewhere.
#pragma once

#include <nettle/sha2.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/util/expected.h"

namespace gantry {

// Incremental hasher for data that arrives in pieces.
class Sha256 {
 public:
  Sha256();
  // Feeds the next piece of the data.
  void update(std::string_view data);
  // Finishes and returns the digest as 64 lowercase hex digits; call once.
  std::string hex_digest();

 private:
  sha256_ctx ctx_;
};

// Digest of a whole buffer.
std::string sha256_hex(std::string_view data);

// Digest of a file's bytes; reads at most max_bytes (error if the file is larger).
Expected<std::string> sha256_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);

// Feeds the first `len` bytes of the open file `fd` (from offset 0, by pread) to `h`; an error if
// the file is shorter or a read fails.
Status sha256_update_from_fd(Sha256& h, int fd, uint64_t len, const std::string& path_for_errors);

}  // namespace gantry
