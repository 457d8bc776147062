// The safe tar extractor on arbitrary archives, into a fresh directory each run: it must never
// crash or write outside that directory.
#include <dirent.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

#include "agent/release/tar_extract.h"

namespace {
std::string base() {
  static std::string b = [] {
    char t[] = "/tmp/gantry-tar-fuzz-XXXXXX";
    std::string d = ::mkdtemp(t);
    std::filesystem::create_directories(d + "/sandbox");
    return d;
  }();
  return b;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string root = base(), sandbox = root + "/sandbox", target = sandbox + "/out";
  std::filesystem::remove_all(target);
  std::filesystem::create_directories(target);
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  gantry::agent::TarLimits lim;
  lim.archive_size = size;
  lim.max_total_bytes = 1 << 20;
  lim.max_entries = 1000;
  lim.fsync = false;
  (void)gantry::agent::extract_tar(in, target, lim);
  // Nothing may appear next to `out` (in the sandbox) or next to the sandbox (in root).
  for (const auto& dir : {sandbox, root}) {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const auto name = e.path().filename().string();
      if (dir == sandbox && name != "out" && name.rfind("out.", 0) != 0 && name.rfind(".", 0) != 0) std::abort();
      if (dir == root && name != "sandbox") std::abort();
    }
  }
  std::filesystem::remove_all(target);
  return 0;
}
