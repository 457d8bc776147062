#include "agent/driver/install_root.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/util/names.h"
#include "common/util/sha256.h"

namespace gantry::agent {

Expected<std::string> read_current_version(const std::string& root) {
  auto target = fs::read_symlink(root + "/current");
  if (!target) {
    if (target.error().code == "not_found") return std::string();
    return target.error();
  }
  std::string t = *target;
  for (const std::string& prefix : {std::string("releases/"), root + "/releases/"}) {
    if (t.rfind(prefix, 0) == 0) {
      std::string v = t.substr(prefix.size());
      while (!v.empty() && v.back() == '/') v.pop_back();
      if (is_safe_name(v)) return v;
    }
  }
  return make_error("corrupt", root + "/current points at '" + t + "', not at a release");
}

Status verify_and_commit_download(const ReleaseId& r, const std::string& part, const std::string& done,
                                  const std::string& hashed_sha256) {
  struct stat st;
  if (::stat(part.c_str(), &st) != 0) return make_error("io", "downloaded artifact " + part + " is missing");
  if (static_cast<uint64_t>(st.st_size) != r.size) {
    (void)fs::remove_all(part);
    return make_error("digest", "digest mismatch: artifact is " + std::to_string(st.st_size) + " bytes, expected " +
                                    std::to_string(r.size));
  }
  Expected<std::string> digest =
      hashed_sha256.empty() ? sha256_file(part, r.size) : Expected<std::string>(hashed_sha256);
  if (!digest) return digest.error();
  if (*digest != r.sha256) {
    (void)fs::remove_all(part);
    return make_error("digest", "digest mismatch: artifact has sha256 " + *digest + ", expected " + r.sha256);
  }
  if (::rename(part.c_str(), done.c_str()) != 0)
    return make_error("io", "rename " + part + " -> " + done + ": " + std::strerror(errno));
  return fs::fsync_dir(fs::dirname(done));
}

Status prune_downloads_except(const std::string& root, const std::vector<std::string>& keep) {
  const std::string dir = root + "/downloads";
  std::error_code ec;
  Status result;
  bool removed = false;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    log::get("agent.driver")->info("removing download {} (not the release being installed)", e.path().string());
    if (Status st = fs::remove_all(e.path().string()); !st.ok()) result = st;
    removed = true;
  }
  if (ec && ec != std::errc::no_such_file_or_directory) return make_error("io", "list " + dir + ": " + ec.message());
  if (removed) (void)fs::fsync_dir(dir);
  return result;
}

}  // namespace gantry::agent
