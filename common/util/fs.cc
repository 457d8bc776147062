#include "common/util/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace gantry::fs {

namespace {
Error sys_error(const std::string& what, int e) {
  return make_error(e == ENOSPC ? "disk_full" : "io", what + ": " + std::strerror(e));
}

Status write_all(int fd, const std::string& data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("write " + path, errno);
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}
}  // namespace

std::string dirname(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("open dir " + dir, errno);
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) return sys_error("fsync dir " + dir, e);
  return Status::Ok();
}

Status write_file_atomic(const std::string& path, const std::string& data, int mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return sys_error("create " + tmp, errno);
  Status st = write_all(fd, data, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = sys_error("fsync " + tmp, errno);
  if (::close(fd) != 0 && st.ok()) st = sys_error("close " + tmp, errno);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = sys_error("rename " + tmp + " -> " + path, errno);
    ::unlink(tmp.c_str());
    return e;
  }
  return fsync_dir(dirname(path));
}

Status replace_symlink(const std::string& link, const std::string& target, bool sync_dir) {
  std::string tmp = link + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0) return sys_error("symlink " + tmp, errno);
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    Error e = sys_error("rename " + tmp + " -> " + link, errno);
    ::unlink(tmp.c_str());
    return e;
  }
  return sync_dir ? fsync_dir(dirname(link)) : Status::Ok();
}

Expected<std::string> read_file(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? make_error("not_found", path + " does not exist") : sys_error("open " + path, errno);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return sys_error("read " + path, e);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return make_error("size", path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  ::close(fd);
  return out;
}

Expected<std::string> read_symlink(const std::string& link) {
  char buf[4096];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  if (n < 0)
    return errno == ENOENT ? make_error("not_found", link + " does not exist") : sys_error("readlink " + link, errno);
  return std::string(buf, static_cast<size_t>(n));
}

Status make_dirs(const std::string& path, int mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return make_error("io", "mkdir " + path + ": " + ec.message());
  (void)mode;
  return Status::Ok();
}

Status remove_all(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return make_error("io", "remove " + path + ": " + ec.message());
  return Status::Ok();
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace gantry::fs
