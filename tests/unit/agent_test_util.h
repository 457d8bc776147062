// Helpers shared by the agent's unit tests: temp dirs, real tar archives, raw tar headers.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace gantry::agent::testing {

// A fresh directory under /tmp, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/gantry-agent-test.XXXXXX";
    char* p = ::mkdtemp(tmpl);
    if (p) path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

inline void write_text(const std::string& path, const std::string& text, int mode = 0644) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Archives the contents of `src_dir` with real GNU tar in ustar format; returns the bytes.
inline std::string make_tar(const std::string& src_dir, const std::string& out_path) {
  std::string cmd = "tar --format=ustar -cf '" + out_path + "' -C '" + src_dir + "' .";
  if (std::system(cmd.c_str()) != 0) return {};
  return read_text(out_path);
}

// One raw ustar header block, for archives real tar refuses to make.
inline std::string tar_header(const std::string& name, char type, uint64_t size = 0, const std::string& link = "",
                              int mode = 0644) {
  std::string h(512, '\0');
  std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(&h[100], 8, "%07o", mode);
  std::snprintf(&h[108], 8, "%07o", 0);
  std::snprintf(&h[116], 8, "%07o", 0);
  std::snprintf(&h[124], 12, "%011llo", static_cast<unsigned long long>(size));
  std::snprintf(&h[136], 12, "%011o", 0);
  h[156] = type;
  std::memcpy(&h[157], link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(&h[257],
              "ustar\0"
              "00",
              8);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

inline std::string tar_data(const std::string& data) {
  std::string d = data;
  d.resize((data.size() + 511) / 512 * 512, '\0');
  return d;
}

inline std::string tar_end() { return std::string(1024, '\0'); }

}  // namespace gantry::agent::testing
