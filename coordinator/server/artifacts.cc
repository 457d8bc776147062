#include "coordinator/server/artifacts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

#include "common/util/fs.h"
#include "common/util/sha256.h"

namespace gantry::coordinator {

ArtifactStore::ArtifactStore(std::string dir) : dir_(std::move(dir)) {}

ArtifactStore::~ArtifactStore() {
  for (auto& [p, fd] : open_fds_) ::close(fd);
}

Status ArtifactStore::init() { return fs::make_dirs(dir_, 0700); }

bool ArtifactStore::has(const std::string& sha256) const { return fs::exists(path_for(sha256)); }

Expected<uint64_t> ArtifactStore::size_of(const std::string& sha256) const {
  struct stat st {};
  if (::stat(path_for(sha256).c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error("not_found", "no artifact " + sha256 + " here");
  return static_cast<uint64_t>(st.st_size);
}

Expected<ArtifactStore::UploadProgress> ArtifactStore::upload(const std::string& sha256, uint64_t size, uint64_t offset,
                                                              const std::string& data) {
  UploadProgress p;
  p.path = path_for(sha256);
  if (fs::exists(p.path)) {
    p.received = size;
    p.complete = true;
    return p;
  }
  std::string part = p.path + ".part";
  struct stat st {};
  uint64_t have = ::stat(part.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (offset > have)
    return make_error("upload", "chunk at offset " + std::to_string(offset) + " but only " + std::to_string(have) +
                                    " bytes received");
  if (offset + data.size() > size) return make_error("upload", "chunk goes past the declared size");
  if (offset + data.size() > have) {
    int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return make_error("io", "open " + part + ": " + std::strerror(errno));
    size_t skip = static_cast<size_t>(have - offset);
    const char* ptr = data.data() + skip;
    size_t left = data.size() - skip;
    off_t at = static_cast<off_t>(have);
    while (left > 0) {
      ssize_t n = ::pwrite(fd, ptr, left, at);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        ::close(fd);
        return make_error(e == ENOSPC ? "disk_full" : "io", "write " + part + ": " + std::strerror(e));
      }
      ptr += n;
      left -= static_cast<size_t>(n);
      at += n;
    }
    if (::fsync(fd) != 0) {
      int e = errno;
      ::close(fd);
      return make_error("io", "fsync " + part + ": " + std::strerror(e));
    }
    ::close(fd);
    have = offset + data.size();
  }
  p.received = have;
  if (have == size) {
    auto digest = sha256_file(part, size);
    if (!digest) return digest.error();
    if (*digest != sha256) {
      ::unlink(part.c_str());
      return make_error("digest",
                        "upload digest " + *digest + " does not match the declared " + sha256 + "; upload discarded");
    }
    if (::rename(part.c_str(), p.path.c_str()) != 0)
      return make_error("io", "rename " + part + ": " + std::strerror(errno));
    if (auto s = fs::fsync_dir(dir_); !s.ok()) return s.error();
    p.complete = true;
  }
  return p;
}

Expected<std::string> ArtifactStore::read(const std::string& path, uint64_t offset, uint32_t length) {
  std::string out(length, '\0');
  auto got = read_into(path, offset, out.data(), length);
  if (!got) return got.error();
  out.resize(*got);
  return out;
}

Expected<size_t> ArtifactStore::read_into(const std::string& path, uint64_t offset, char* out, size_t length) {
  int fd;
  auto it = open_fds_.find(path);
  if (it != open_fds_.end()) {
    fd = it->second;
  } else {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error("not_found", "open " + path + ": " + std::strerror(errno));
    if (open_fds_.size() > 64) {
      for (auto& [p, f] : open_fds_) ::close(f);
      open_fds_.clear();
    }
    open_fds_[path] = fd;
  }
  size_t got = 0;
  while (got < length) {
    ssize_t n = ::pread(fd, out + got, length - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error("io", "read " + path + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

}  // namespace gantry::coordinator
