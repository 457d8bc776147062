#include "coordinator/server/artifact_chunk.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/protocol/codec.h"
#include "common/util/names.h"

namespace gantry::coordinator {

namespace {

// The operator API's argument errors (PROTOCOL.md §6), for the two kinds this command takes.
Expected<uint64_t> u64_arg(const nlohmann::json& a, const char* k) {
  if (!a.contains(k) || a[k].is_null()) return make_error("invalid", std::string("missing argument: ") + k);
  if (!a[k].is_number_unsigned())
    return make_error("invalid", std::string("argument ") + k + " must be a non-negative integer");
  return a[k].get<uint64_t>();
}

}  // namespace

Expected<nlohmann::json> artifact_chunk(ArtifactStore& artifacts, const nlohmann::json& args) {
  if (!args.is_object()) return make_error("invalid", "bad arguments: not a map");
  if (!args.contains("sha256") || args["sha256"].is_null()) return make_error("invalid", "missing argument: sha256");
  if (!args["sha256"].is_string()) return make_error("invalid", "argument sha256 must be a string");
  // Checked before it names a file: 64 lowercase hex digits, nothing else (no path).
  const std::string sha = args["sha256"].get<std::string>();
  if (!is_sha256_hex(sha)) return make_error("invalid", "sha256 must be 64 lowercase hex digits");
  auto offset = u64_arg(args, "offset");
  if (!offset) return offset.error();
  auto length = u64_arg(args, "length");
  if (!length) return length.error();
  if (*length == 0 || *length > proto::kMaxChunkBytes)
    return make_error("invalid", "length must be 1.." + std::to_string(proto::kMaxChunkBytes));
  auto size = artifacts.size_of(sha);
  if (!size) return make_error("not_found", "not_found: no artifact with sha256 " + sha + " on this coordinator");
  if (*offset > *size)
    return make_error("range", "range: offset " + std::to_string(*offset) + " is past the end of the artifact (" +
                                   std::to_string(*size) + " bytes)");
  const auto want = static_cast<uint32_t>(std::min<uint64_t>(*length, *size - *offset));
  auto bytes = artifacts.read(artifacts.path_for(sha), *offset, want);
  if (!bytes) return make_error("io", "io: " + bytes.error().message);
  return nlohmann::json{{"sha256", sha},
                        {"offset", *offset},
                        {"size", *size},
                        {"data", nlohmann::json::binary(std::vector<uint8_t>(bytes->begin(), bytes->end()))}};
}

}  // namespace gantry::coordinator
