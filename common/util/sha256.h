// SHA-256 of buffers and files, as lowercase hex. On x86-64 CPUs with the SHA extensions
// (SHA-NI: AMD Zen and later, Intel Ice Lake / Goldmont and later) the compression function runs
// on them, several times faster than portable C (libsodium's runs at ~300 MiB/s on the benchmark
// VM); elsewhere a portable implementation. Both are checked against libsodium's
// crypto_hash_sha256 in tests/unit/sha256_test.cc. (Not OpenSSL's libcrypto: as fast, but
// loading it added ~1.5 MiB to every idle agent's resident memory.)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/util/expected.h"

namespace gantry {

// Incremental hasher for data that arrives in pieces.
class Sha256 {
 public:
  Sha256();
  void update(std::string_view data);
  std::string hex_digest();  // finishes; call once

  // Whether the SHA extensions are used on this CPU (for logs and tests).
  static bool uses_cpu_extensions();
  // Tests: a hasher that uses the portable code even where the extensions exist.
  static Sha256 portable();

 private:
  void blocks(const unsigned char* p, size_t n);  // n whole 64-byte blocks
  uint32_t h_[8];
  unsigned char buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
  bool ni_;
};

std::string sha256_hex(std::string_view data);

// Digest of a file's bytes; reads at most max_bytes (error if the file is larger).
Expected<std::string> sha256_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);

// Feeds the first `len` bytes of the open file `fd` (from offset 0, by pread) to `h`; an error if
// the file is shorter or a read fails.
Status sha256_update_from_fd(Sha256& h, int fd, uint64_t len, const std::string& path_for_errors);

}  // namespace gantry
