#pragma once

#include <cstdint>

namespace gantry::transport {

// Buffers handed out by Gantry's replacement of libsodium's guarded allocator
// (curve_handshake_memory.cc explains why it exists) since the process started. A test reads it
// to prove that libzmq's CURVE handshake really went through the replacement.
std::uint64_t curve_handshake_buffers_allocated();

}  // namespace gantry::transport
