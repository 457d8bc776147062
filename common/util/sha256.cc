#include "common/util/sha256.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace gantry {

namespace {
struct SodiumInit {
  SodiumInit() {
    if (sodium_init() < 0) std::abort();  // no usable randomness: nothing safe can follow
  }
} g_sodium_init;

std::string to_hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}
}  // namespace

Sha256::Sha256() { crypto_hash_sha256_init(&st_); }

void Sha256::update(std::string_view data) {
  crypto_hash_sha256_update(&st_, reinterpret_cast<const unsigned char*>(data.data()), data.size());
}

std::string Sha256::hex_digest() {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st_, out);
  return to_hex(out, sizeof out);
}

std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.hex_digest();
}

Expected<std::string> sha256_file(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error("io", "open " + path + ": " + std::strerror(errno));
  Sha256 h;
  char buf[1 << 16];
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return make_error("io", "read " + path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    if (total > max_bytes) {
      ::close(fd);
      return make_error("size", path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    h.update(std::string_view(buf, static_cast<size_t>(n)));
  }
  ::close(fd);
  return h.hex_digest();
}

}  // namespace gantry
