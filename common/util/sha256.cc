#include "common/util/sha256.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace gantry {

namespace {
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

Sha256::Sha256() { sha256_init(&ctx_); }

void Sha256::update(std::string_view data) {
  sha256_update(&ctx_, data.size(), reinterpret_cast<const uint8_t*>(data.data()));
}

std::string Sha256::hex_digest() {
  uint8_t out[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx_, sizeof out, out);
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
  std::unique_ptr<char[]> buf(new char[1 << 18]);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.get(), 1 << 18);
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
    h.update(std::string_view(buf.get(), static_cast<size_t>(n)));
  }
  ::close(fd);
  return h.hex_digest();
}

Status sha256_update_from_fd(Sha256& h, int fd, uint64_t len, const std::string& path_for_errors) {
  std::unique_ptr<char[]> buf(new char[1 << 18]);
  uint64_t off = 0;
  while (off < len) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(len - off, 1 << 18));
    ssize_t n = ::pread(fd, buf.get(), want, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error("io", "read " + path_for_errors + ": " + std::strerror(errno));
    }
    if (n == 0) return make_error("io", "read " + path_for_errors + ": shorter than " + std::to_string(len) + " bytes");
    h.update(std::string_view(buf.get(), static_cast<size_t>(n)));
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

}  // namespace gantry
