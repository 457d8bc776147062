// SHA-256 of buffers and files, as lowercase hex. OpenSSL's libcrypto (EVP): it uses the CPU's
// SHA extensions where there are any (SHA-NI, ARMv8 SHA2), several times faster than portable C.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/util/expected.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace gantry {

// Incremental hasher for data that arrives in pieces. Movable, not copyable.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& o) noexcept;
  Sha256& operator=(Sha256&& o) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view data);
  std::string hex_digest();  // finishes; call once

 private:
  evp_md_ctx_st* ctx_;
};

std::string sha256_hex(std::string_view data);

// Digest of a file's bytes; reads at most max_bytes (error if the file is larger).
Expected<std::string> sha256_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);

// Feeds the first `len` bytes of the open file `fd` (from offset 0, by pread) to `h`; an error if
// the file is shorter or a read fails.
Status sha256_update_from_fd(Sha256& h, int fd, uint64_t len, const std::string& path_for_errors);

}  // namespace gantry
