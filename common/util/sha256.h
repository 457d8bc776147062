// SHA-256 (libsodium) of buffers and files, as lowercase hex.
#pragma once

#include <sodium.h>

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

 private:
  crypto_hash_sha256_state st_;
};

std::string sha256_hex(std::string_view data);

// Digest of a file's bytes; reads at most max_bytes (error if the file is larger).
Expected<std::string> sha256_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);

}  // namespace gantry
