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

// The bytes of encode(Chunk{sha256, offset, total_size, data}) that precede the data, for a
// data of `data_len` bytes: header + data is byte for byte that encoding. Lets a sender read
// artifact bytes straight into the outgoing frame instead of copying them through msgpack.
std::string encode_chunk_head(std::string_view sha256, uint64_t offset, uint64_t total_size, std::size_t data_len);

// Parses and validates one frame. Malformed, oversized or unknown input yields an Error
// (code "decode", "limit", "unknown_type" or "invalid"), never an exception or a crash.
Expected<Message> decode(std::string_view bytes, const DecodeLimits& limits = {});

// A Chunk whose data is not copied: it points into the bytes it was decoded from and is valid
// only while they are.
struct ChunkView {
  std::string sha256;
  uint64_t offset = 0;
  uint64_t total_size = 0;
  std::string_view data;
};

// decode() for the hot path of a download: the same checks as decode() of a Chunk, the data
// left in `bytes`. Any other well-formed message yields the error code "not_chunk" (decode()
// it then); malformed input the same errors as decode().
Expected<ChunkView> decode_chunk(std::string_view bytes, const DecodeLimits& limits = {});

}  // namespace gantry::proto
