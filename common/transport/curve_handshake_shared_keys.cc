// A CurveZMQ handshake (libzmq 4.3's curve_server.cpp and curve_client_tools.hpp) derives the
// same Curve25519 shared key twice on each side:
//   server: HELLO is opened and WELCOME boxed with (client's short-term key, server's long-term
//           secret); INITIATE is opened and the session key precomputed with (client's
//           short-term key, server's short-term secret);
//   client: HELLO is boxed and WELCOME opened with (server's long-term key, client's short-term
//           secret); the session key is precomputed and INITIATE boxed with (server's
//           short-term key, client's short-term secret).
// Each derivation is a scalar multiplication (~36 us on this project's 2-CPU machines), the
// largest part of a handshake's CPU: five per side where three are distinct. In a reconnect
// storm of 10,000 CURVE agents (docs/BENCHMARKS.md figure 4) that is 0.7 CPU s of duplicates
// on each side.
//
// Gantry's executables define crypto_box, crypto_box_open and crypto_box_beforenm themselves
// (libzmq, static or shared, binds to an executable's exported definitions first): each looks
// the (public key, secret key) pair up among the last kRecent shared keys this thread derived,
// and derives (with libsodium's crypto_box_curve25519xsalsa20poly1305_beforenm) and remembers it
// only when it is not there; the box is then libsodium's own crypto_box_afternm /
// crypto_box_open_afternm. Results are byte for byte libsodium's (unit test
// CurveSharedKeys.MatchLibsodiumByteForByte). A pair whose derivation fails (a small-order
// public key) fails as in libsodium and is not remembered.
//
// The remembered entries hold copies of keys libzmq keeps in ordinary memory for as long as the
// connection lives (its short-term secret and precomputed session key, and the long-term secret
// in its socket options); they are compared in constant time (sodium_memcmp) and wiped when the
// thread ends. SECURITY.md ("CURVE handshakes") says this to operators.

#include <sodium.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "common/transport/curve_handshake.h"

namespace {

constexpr int kRecent = 16;  // handshakes one I/O thread interleaves, with room to spare

struct Entry {
  unsigned char pk[crypto_box_PUBLICKEYBYTES];
  unsigned char sk[crypto_box_SECRETKEYBYTES];
  unsigned char key[crypto_box_BEFORENMBYTES];
  bool used;
};

struct Recent {
  Entry entries[kRecent] = {};
  int next = 0;
  ~Recent() { sodium_memzero(entries, sizeof entries); }
};

thread_local Recent t_recent;
std::atomic<std::uint64_t> g_reused{0};
std::atomic<std::uint64_t> g_derived{0};

// The shared key of (pk, sk) into `key`: remembered or derived. 0, or -1 as libsodium's beforenm.
int shared_key(unsigned char* key, const unsigned char* pk, const unsigned char* sk) {
  Recent& r = t_recent;
  for (Entry& e : r.entries) {
    if (e.used && sodium_memcmp(e.pk, pk, sizeof e.pk) == 0 && sodium_memcmp(e.sk, sk, sizeof e.sk) == 0) {
      std::memcpy(key, e.key, sizeof e.key);
      g_reused.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
  }
  if (crypto_box_curve25519xsalsa20poly1305_beforenm(key, pk, sk) != 0) {
    return -1;
  }
  g_derived.fetch_add(1, std::memory_order_relaxed);
  Entry& e = r.entries[r.next];
  r.next = (r.next + 1) % kRecent;
  std::memcpy(e.pk, pk, sizeof e.pk);
  std::memcpy(e.sk, sk, sizeof e.sk);
  std::memcpy(e.key, key, sizeof e.key);
  e.used = true;
  return 0;
}

// `box(k)` with the shared key of (pk, sk), wiped afterwards; -1 if it cannot be derived.
template <typename Box>
int with_shared_key(const unsigned char* pk, const unsigned char* sk, Box box) {
  unsigned char k[crypto_box_BEFORENMBYTES];
  if (shared_key(k, pk, sk) != 0) {
    return -1;
  }
  const int rc = box(k);
  sodium_memzero(k, sizeof k);
  return rc;
}

}  // namespace

extern "C" {

int crypto_box_beforenm(unsigned char* k, const unsigned char* pk, const unsigned char* sk) {
  return shared_key(k, pk, sk);
}

int crypto_box(unsigned char* c, const unsigned char* m, unsigned long long mlen, const unsigned char* n,
               const unsigned char* pk, const unsigned char* sk) {
  return with_shared_key(pk, sk, [&](const unsigned char* k) { return crypto_box_afternm(c, m, mlen, n, k); });
}

int crypto_box_open(unsigned char* m, const unsigned char* c, unsigned long long clen, const unsigned char* n,
                    const unsigned char* pk, const unsigned char* sk) {
  return with_shared_key(pk, sk, [&](const unsigned char* k) { return crypto_box_open_afternm(m, c, clen, n, k); });
}

}  // extern "C"

namespace gantry::transport {

std::uint64_t curve_shared_keys_reused() { return g_reused.load(std::memory_order_relaxed); }
std::uint64_t curve_shared_keys_derived() { return g_derived.load(std::memory_order_relaxed); }

}  // namespace gantry::transport
