#include "common/util/sha256.h"

#include <fcntl.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

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

constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// FIPS 180-4 §6.2.2, one block at a time.
void compress_portable(uint32_t h[8], const unsigned char* p, size_t nblocks) {
  for (; nblocks > 0; --nblocks, p += 64) {
    uint32_t w[64];
    for (int t = 0; t < 16; ++t)
      w[t] = uint32_t(p[4 * t]) << 24 | uint32_t(p[4 * t + 1]) << 16 | uint32_t(p[4 * t + 2]) << 8 | uint32_t(p[4 * t + 3]);
    for (int t = 16; t < 64; ++t) {
      uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; ++t) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[t] + w[t];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
}

#if defined(__x86_64__)
bool cpu_has_sha_ni() {
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d) || a < 7) return false;
  __get_cpuid(1, &a, &b, &c, &d);
  const bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
  __cpuid_count(7, 0, a, b, c, d);
  return ssse3 && sse41 && (b & (1u << 29));  // CPUID.7.0:EBX.SHA[bit 29]
}

// The same rounds with SHA256RNDS2 (two rounds per instruction) and SHA256MSG1/MSG2 for the
// message schedule. The state lives in two registers in the order the instructions use:
// ABEF and CDGH.
__attribute__((target("sha,sse4.1,ssse3"))) void compress_ni(uint32_t h[8], const unsigned char* p, size_t nblocks) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);  // big-endian words
  __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&h[0])), 0xB1);  // CDAB
  __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&h[4])), 0x1B);   // EFGH
  __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);                                                          // ABEF
  s1 = _mm_blend_epi16(s1, tmp, 0xF0);                                                               // CDGH
  for (; nblocks > 0; --nblocks, p += 64) {
    const __m128i abef = s0, cdgh = s1;
    __m128i w[4];
    for (int i = 0; i < 4; ++i)
      w[i] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i)), bswap);
    for (int g = 0; g < 16; ++g) {  // rounds 4g .. 4g+3
      __m128i& cur = w[g & 3];
      __m128i msg = _mm_add_epi32(cur, _mm_loadu_si128(reinterpret_cast<const __m128i*>(&kK[4 * g])));
      s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
      s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(msg, 0x0E));
      if (g < 12) {  // words 4g+16 .. 4g+19 replace words 4g .. 4g+3
        const __m128i& w1 = w[(g + 1) & 3];
        const __m128i& w2 = w[(g + 2) & 3];
        const __m128i& w3 = w[(g + 3) & 3];
        __m128i x = _mm_add_epi32(_mm_sha256msg1_epu32(cur, w1), _mm_alignr_epi8(w3, w2, 4));  // + W[t-7]
        cur = _mm_sha256msg2_epu32(x, w3);
      }
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
  }
  tmp = _mm_shuffle_epi32(s0, 0x1B);                                               // FEBA
  s1 = _mm_shuffle_epi32(s1, 0xB1);                                                // DCHG
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&h[0]), _mm_blend_epi16(tmp, s1, 0xF0));  // DCBA
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&h[4]), _mm_alignr_epi8(s1, tmp, 8));     // HGFE
}
#else
bool cpu_has_sha_ni() { return false; }
void compress_ni(uint32_t h[8], const unsigned char* p, size_t nblocks) { compress_portable(h, p, nblocks); }
#endif

const bool g_sha_ni = cpu_has_sha_ni();
}  // namespace

Sha256::Sha256() : ni_(g_sha_ni) { std::memcpy(h_, kInit, sizeof h_); }

Sha256 Sha256::portable() {
  Sha256 s;
  s.ni_ = false;
  return s;
}

bool Sha256::uses_cpu_extensions() { return g_sha_ni; }

void Sha256::blocks(const unsigned char* p, size_t n) {
  if (ni_) compress_ni(h_, p, n);
  else compress_portable(h_, p, n);
}

void Sha256::update(std::string_view data) {
  auto p = reinterpret_cast<const unsigned char*>(data.data());
  size_t n = data.size();
  total_ += n;
  if (buf_len_ > 0) {
    size_t take = std::min(n, sizeof buf_ - buf_len_);
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take, p += take, n -= take;
    if (buf_len_ < sizeof buf_) return;
    blocks(buf_, 1);
    buf_len_ = 0;
  }
  if (size_t whole = n / 64; whole > 0) {
    blocks(p, whole);
    p += whole * 64, n -= whole * 64;
  }
  std::memcpy(buf_, p, n);
  buf_len_ = n;
}

std::string Sha256::hex_digest() {
  const uint64_t bits = total_ * 8;
  unsigned char pad[72] = {0x80};
  size_t pad_len = (buf_len_ < 56 ? 56 : 120) - buf_len_;
  for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
  const uint64_t total = total_;
  update(std::string_view(reinterpret_cast<const char*>(pad), pad_len + 8));
  total_ = total;
  unsigned char out[32];
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<unsigned char>(h_[i] >> (24 - 8 * j));
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
