// common/util/sha256 (Nettle underneath): known vectors (FIPS 180-2 / NIST), pieces vs whole,
// files, and agreement with a second implementation (libsodium's).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include "agent_test_util.h"
#include "common/util/sha256.h"

#include <sodium.h>

using namespace gantry;
using namespace gantry::agent::testing;

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;  // one million 'a', fed in uneven pieces
  std::string a(1000000, 'a');
  for (size_t off = 0, n = 1; off < a.size(); off += n, n = n * 3 % 65537 + 1)
    h.update(std::string_view(a).substr(off, std::min(n, a.size() - off)));
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  Sha256 moved = Sha256();
  moved.update("abc");
  Sha256 m2(std::move(moved));
  EXPECT_EQ(m2.hex_digest(), sha256_hex("abc"));
}

TEST(Sha256, FilesAndPrefixes) {
  TempDir t;
  std::string data(700001, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + (i >> 9));
  write_text(t / "f", data);
  EXPECT_EQ(*sha256_file(t / "f"), sha256_hex(data));
  EXPECT_FALSE(sha256_file(t / "f", data.size() - 1)) << "larger than allowed";
  EXPECT_FALSE(sha256_file(t / "missing"));
  int fd = ::open((t / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Sha256 h;
  ASSERT_TRUE(sha256_update_from_fd(h, fd, 300000, "f").ok());
  h.update(std::string_view(data).substr(300000));
  EXPECT_EQ(h.hex_digest(), sha256_hex(data));
  Sha256 h2;
  EXPECT_FALSE(sha256_update_from_fd(h2, fd, data.size() + 1, "f").ok()) << "file shorter than asked";
  ::close(fd);
}

// Agrees with libsodium's crypto_hash_sha256 on every length around the block and padding
// boundaries, whole and fed in uneven pieces.
TEST(Sha256, MatchesLibsodium) {
  std::string data(5000, '\0');
  uint32_t x = 12345;
  for (auto& c : data) c = static_cast<char>((x = x * 1103515245 + 12345) >> 16);
  auto sodium = [](std::string_view d) {
    unsigned char out[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(d.data()), d.size());
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (unsigned char b : out) s += hex[b >> 4], s += hex[b & 15];
    return s;
  };
  for (size_t len = 0; len <= 300; ++len) {
    std::string_view d(data.data(), len);
    EXPECT_EQ(sha256_hex(d), sodium(d)) << "length " << len;
    Sha256 split;
    split.update(d.substr(0, len / 3));
    split.update(d.substr(len / 3));
    EXPECT_EQ(split.hex_digest(), sodium(d)) << "two pieces, length " << len;
  }
  Sha256 h;
  for (size_t off = 0, n = 1; off < data.size(); off += n, n = n * 7 % 257 + 1)
    h.update(std::string_view(data).substr(off, std::min(n, data.size() - off)));
  EXPECT_EQ(h.hex_digest(), sodium(data));
}
