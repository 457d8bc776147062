// proto::decode on arbitrary bytes: never crashes, never allocates without bound; whatever it
// accepts re-encodes and decodes to the same message type.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/protocol/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto m = gantry::proto::decode(in);
  if (!m) return 0;
  auto again = gantry::proto::decode(gantry::proto::encode(*m));
  if (!again || gantry::proto::type_of(*again) != gantry::proto::type_of(*m)) std::abort();
  return 0;
}
