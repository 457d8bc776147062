#pragma once

#include <cstdint>

// Gantry's executables replace two things libzmq's CURVE handshake takes from libsodium
// (object library gantry_curve_handshake; SECURITY.md "CURVE handshakes"):
//   curve_handshake_memory.cc      its scratch buffers come from malloc + wipe instead of
//                                  sodium_malloc's guarded pages;
//   curve_handshake_shared_keys.cc a Curve25519 shared key it derives twice in one handshake is
//                                  derived once.
// These counters let tests prove that a real handshake went through the replacements.
namespace gantry::transport {

// Buffers handed out by the sodium_malloc replacement since the process started.
std::uint64_t curve_handshake_buffers_allocated();

// crypto_box / crypto_box_open / crypto_box_beforenm calls answered from the calling thread's
// recent shared keys instead of a new scalar multiplication, and calls that had to derive one.
std::uint64_t curve_shared_keys_reused();
std::uint64_t curve_shared_keys_derived();

}  // namespace gantry::transport
