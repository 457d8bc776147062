// libzmq's CURVE handshake takes its scratch buffers (the boxes of HELLO, WELCOME, INITIATE and
// READY and their plaintexts: 6 on the server's side of one handshake, about as many on the
// client's) from libsodium's guarded allocator. sodium_malloc gives each buffer its own pages: an mmap, guard
// pages made inaccessible with mprotect, mlock; sodium_free undoes it with munlock, mprotect and
// munmap, and every munmap and mprotect of a live mapping interrupts the other CPUs to flush
// their TLBs. For one handshake that is some 40 system calls on each side, more kernel time than
// the handshake's X25519 multiplications. In a 10,000-agent reconnect storm (docs/BENCHMARKS.md
// figure 4) this allocator took the coordinator's I/O thread from 5.90 to 3.57 CPU s and the
// storm from 9.35 to 5.74 s.
//
// Gantry's executables define the three functions themselves, so libzmq (static or shared) and
// libsodium's own sodium_allocarray reach these instead (an executable's definitions come first
// in the dynamic linker's lookup; CMake target gantry_curve_handshake exports them). The
// buffers come from malloc and are wiped with sodium_memzero before they are freed, as
// sodium_free wipes them. What is given up: the guard pages and the mlock of these short-lived
// buffers. The keys that matter more are not in them: libzmq keeps the long-term secret key and
// each connection's session keys in ordinary memory of its socket options and mechanism
// objects, whatever the allocator. SECURITY.md ("CURVE handshakes") says the same to
// operators.
//
// Nothing in Gantry calls sodium_malloc for its own secrets. sodium_mprotect_* must never be given
// memory from here (it assumes libsodium's page layout); neither Gantry nor libzmq calls it.

#include "common/transport/curve_handshake.h"

#include <sodium.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>

namespace {

// The size is kept in front of the buffer so sodium_free can wipe all of it. 16 bytes keep the
// buffer as aligned as malloc's (libsodium's own buffers end at a page boundary and are not).
constexpr std::size_t kHeader = 16;

std::atomic<std::uint64_t> g_allocations{0};

}  // namespace

extern "C" {

void* sodium_malloc(const std::size_t size) {
  if (size > SIZE_MAX - kHeader) {
    errno = ENOMEM;
    return nullptr;
  }
  auto* base = static_cast<unsigned char*>(std::malloc(size + kHeader));
  if (base == nullptr) {
    errno = ENOMEM;
    return nullptr;
  }
  *reinterpret_cast<std::size_t*>(base) = size;
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return base + kHeader;
}

void* sodium_allocarray(const std::size_t count, const std::size_t size) {
  if (count > 0 && size >= SIZE_MAX / count) {
    errno = ENOMEM;
    return nullptr;
  }
  return sodium_malloc(count * size);
}

void sodium_free(void* ptr) {
  if (ptr == nullptr) {
    return;
  }
  auto* base = static_cast<unsigned char*>(ptr) - kHeader;
  const std::size_t size = *reinterpret_cast<std::size_t*>(base);
  sodium_memzero(ptr, size);
  std::free(base);
}

}  // extern "C"

namespace gantry::transport {

std::uint64_t curve_handshake_buffers_allocated() {
  return g_allocations.load(std::memory_order_relaxed);
}

}  // namespace gantry::transport
