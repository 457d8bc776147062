// The release manifest parser on arbitrary bytes, and signature verification over them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/release/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto m = gantry::release::parse_manifest(in);
  if (m) {
    // What parses must survive its own canonical form.
    auto again = gantry::release::parse_manifest(m->to_bytes());
    if (!again || again->sha256 != m->sha256 || again->size != m->size) std::abort();
  }
  // Verification with a signature cut from the input itself never succeeds by accident.
  std::string sig(in.substr(0, std::min<size_t>(128, size)));
  static const std::string key(32, '\x01');
  if (gantry::release::verify(in, sig, {key})) std::abort();
  return 0;
}
