// Encoding and decoding of wire messages: one msgpack map {"t": type, "b": body} per frame.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/protocol/messages.h"
#include "common/util/expected.h"

namespace gantry::proto {

// Bounds handed to msgpack::unpack; anything beyond is an error value, never an allocation.
struct DecodeLimits {
  std::size_t max_array = 100000;
  std::size_t max_map = 4096;
  std::size_t max_str = 64 * 1024;
  std::size_t max_bin = 2 * 1024 * 1024;
  std::size_t max_ext = 0;
  std::size_t max_depth = 8;
};

// Largest chunk of artifact data a Chunk carries.
constexpr uint32_t kMaxChunkBytes = 1024 * 1024;

// Serializes one message into the bytes of one ZeroMQ frame.
std::string encode(const Message& m);

// Parses and validates one frame. Malformed, oversized or unknown input yields an Error
// (code "decode", "limit", "unknown_type" or "invalid"), never an exception or a crash.
Expected<Message> decode(std::string_view bytes, const DecodeLimits& limits = {});

}  // namespace gantry::proto
