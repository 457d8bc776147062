#include "agent/release/tar_extract.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "common/util/text.h"

namespace gantry::agent {
namespace {

constexpr size_t kBlock = 512;

Error bad(const std::string& msg) { return make_error("bad_archive", msg); }
Error sys(const std::string& what, int e) {
  return make_error(e == ENOSPC ? "disk_full" : "io", what + ": " + std::strerror(e));
}

// Closes a descriptor at scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

using Path = std::vector<std::string>;

std::string join(const Path& p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n && i < p.size(); ++i) {
    if (i) s += '/';
    s += p[i];
  }
  return s;
}

// A NUL-terminated header field; bytes after the first NUL must all be NUL.
Expected<std::string> field_str(const char* f, size_t n, const char* what) {
  size_t len = strnlen(f, n);
  for (size_t i = len; i < n; ++i)
    if (f[i] != '\0') return bad(std::string("NUL inside ") + what);
  return std::string(f, len);
}

Expected<uint64_t> field_octal(const char* f, size_t n, const char* what) {
  if (static_cast<unsigned char>(f[0]) & 0x80) return bad(std::string("base-256 ") + what + " not supported");
  size_t i = 0;
  while (i < n && f[i] == ' ') ++i;
  uint64_t v = 0;
  size_t digits = 0;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; ++i, ++digits) {
    if (v > (UINT64_MAX >> 3)) return bad(std::string(what) + " overflows");
    v = (v << 3) | static_cast<uint64_t>(f[i] - '0');
  }
  for (; i < n; ++i)
    if (f[i] != ' ' && f[i] != '\0') return bad(std::string("malformed ") + what);
  if (digits == 0) return bad(std::string("empty ") + what);
  return v;
}

// Splits an archive path into safe components ("" and "." dropped).
Expected<Path> split_path(const std::string& name, size_t max_path) {
  if (name.size() > max_path) return bad("path too long");
  if (name.find('\0') != std::string::npos) return bad("NUL in path");
  if (!name.empty() && name[0] == '/') return bad("absolute path '" + safe_text(name, 256) + "' refused");
  Path out;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string c = name.substr(start, end - start);
    if (c == "..") return bad("path '" + safe_text(name, 256) + "' has a '..' component");
    if (c.size() > 255) return bad("path component too long");
    if (!c.empty() && c != ".") out.push_back(std::move(c));
    start = end + 1;
  }
  return out;
}

bool read_exact(std::istream& in, char* buf, size_t n, size_t* got) {
  in.read(buf, static_cast<std::streamsize>(n));
  *got = static_cast<size_t>(in.gcount());
  return *got == n;
}

class Extractor {
 public:
  Extractor(std::istream& in, const std::string& dir, const TarLimits& lim) : in_(in), dir_(dir), lim_(lim) {}

  Expected<TarStats> run() {
    root_ = Fd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (root_.fd < 0) return sys("open " + dir_, errno);
    dirs_.insert("");
    for (;;) {
      char h[kBlock];
      size_t got = 0;
      if (!read_exact(in_, h, kBlock, &got)) {
        if (got == 0) return bad("truncated archive: no end-of-archive marker");
        return bad("truncated header");
      }
      consumed_ += kBlock;
      if (std::all_of(h, h + kBlock, [](char c) { return c == '\0'; })) break;
      if (++entries_ > lim_.max_entries) return bad("too many entries");
      Status st = entry(h);
      if (!st.ok()) return st.error();
    }
    if (Status st = check_symlinks(); !st.ok()) return st.error();
    if (Status st = finish_dirs(); !st.ok()) return st.error();
    return stats_;
  }

 private:
  Status entry(const char* h) {
    auto sum = field_octal(h + 148, 8, "checksum");
    if (!sum) return sum.error();
    uint64_t u = 0;
    int64_t s = 0;
    for (size_t i = 0; i < kBlock; ++i) {
      bool in_sum = i >= 148 && i < 156;
      u += in_sum ? ' ' : static_cast<unsigned char>(h[i]);
      s += in_sum ? ' ' : static_cast<signed char>(h[i]);
    }
    if (*sum != u && static_cast<int64_t>(*sum) != s) return bad("header checksum mismatch");
    if (std::memcmp(h + 257, "ustar", 5) != 0) return bad("not a ustar/GNU header");
    bool gnu = std::memcmp(h + 257, "ustar  \0", 8) == 0;

    auto size = field_octal(h + 124, 12, "size");
    if (!size) return size.error();
    uint64_t remaining = lim_.archive_size >= consumed_ ? lim_.archive_size - consumed_ : 0;
    if (*size > remaining) return bad("entry larger than the archive");
    char type = h[156];

    if (type == 'L' || type == 'K') {
      if (*size == 0 || *size > lim_.max_path + 1) return bad("bad GNU long name");
      std::string data;
      if (Status st = read_data(*size, &data); !st.ok()) return st;
      while (!data.empty() && data.back() == '\0') data.pop_back();
      if (data.find('\0') != std::string::npos) return bad("NUL inside GNU long name");
      (type == 'L' ? long_name_ : long_link_) = std::move(data);
      return Status::Ok();
    }

    std::string name;
    if (long_name_) {
      name = std::move(*long_name_);
      long_name_.reset();
    } else {
      auto n = field_str(h, 100, "name");
      if (!n) return n.error();
      name = *n;
      if (!gnu) {
        auto prefix = field_str(h + 345, 155, "prefix");
        if (!prefix) return prefix.error();
        if (!prefix->empty()) name = *prefix + "/" + name;
      }
    }
    std::string link;
    if (long_link_) {
      link = std::move(*long_link_);
      long_link_.reset();
    } else {
      auto l = field_str(h + 157, 100, "link name");
      if (!l) return l.error();
      link = *l;
    }
    auto mode = field_octal(h + 100, 8, "mode");
    if (!mode) return mode.error();
    auto path = split_path(name, lim_.max_path);
    if (!path) return path.error();

    switch (type) {
      case '0':
      case '\0':
      case '7':
        if (path->empty()) return bad("regular file with an empty name");
        return file(*path, *size, static_cast<mode_t>(*mode & 0777));
      case '5':
        if (Status st = skip_data(*size); !st.ok()) return st;
        if (path->empty()) return Status::Ok();  // "./" itself
        return directory(*path, static_cast<mode_t>(*mode & 0777));
      case '2':
        if (Status st = skip_data(*size); !st.ok()) return st;
        if (path->empty()) return bad("symlink with an empty name");
        return symlink(*path, link);
      case '1':
        return bad("hardlink '" + safe_text(name, 256) + "' refused");
      case '3':
      case '4':
        return bad("device node '" + safe_text(name, 256) + "' refused");
      case '6':
        return bad("fifo '" + safe_text(name, 256) + "' refused");
      case 'x':
      case 'g':
        return bad("pax extended headers are not supported (use tar --format=ustar)");
      default:
        return bad(std::string("unsupported entry type '") + type + "'");
    }
  }

  // Opens (creating when missing) the directory made of the first n components, never following symlinks.
  Expected<Fd> open_dir(const Path& p, size_t n) {
    Fd cur(::dup(root_.fd));
    if (cur.fd < 0) return sys("dup", errno);
    for (size_t i = 0; i < n; ++i) {
      int fd = ::openat(cur.fd, p[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 && errno == ENOENT) {
        if (::mkdirat(cur.fd, p[i].c_str(), 0755) != 0 && errno != EEXIST) return sys("mkdir " + join(p, i + 1), errno);
        dirs_.insert(join(p, i + 1));
        ++stats_.dirs;
        fd = ::openat(cur.fd, p[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
          return bad("path '" + join(p, p.size()) + "' goes through a symlink or a file");
        return sys("open " + join(p, i + 1), errno);
      }
      cur = Fd(fd);
    }
    return cur;
  }

  Status file(const Path& p, uint64_t size, mode_t mode) {
    stats_.bytes += size;
    if (stats_.bytes > lim_.max_total_bytes) return bad("archive expands beyond the size limit");
    auto parent = open_dir(p, p.size() - 1);
    if (!parent) return parent.error();
    Fd fd(::openat(parent->fd, p.back().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd.fd < 0) {
      if (errno == EEXIST) return bad("duplicate entry '" + join(p, p.size()) + "'");
      return sys("create " + join(p, p.size()), errno);
    }
    std::vector<char> buf(64 * 1024);
    uint64_t left = size;
    while (left > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
      size_t got = 0;
      if (!read_exact(in_, buf.data(), n, &got)) return bad("truncated file data for '" + join(p, p.size()) + "'");
      for (size_t off = 0; off < n;) {
        ssize_t w = ::write(fd.fd, buf.data() + off, n - off);
        if (w < 0) {
          if (errno == EINTR) continue;
          return sys("write " + join(p, p.size()), errno);
        }
        off += static_cast<size_t>(w);
      }
      left -= n;
    }
    consumed_ += size;
    if (Status st = skip_padding(size); !st.ok()) return st;
    // Permission bits only: setuid/setgid/sticky from an archive are never honoured.
    if (::fchmod(fd.fd, mode) != 0) return sys("chmod " + join(p, p.size()), errno);
    if (lim_.fsync && ::fsync(fd.fd) != 0) return sys("fsync " + join(p, p.size()), errno);
    ++stats_.files;
    return Status::Ok();
  }

  Status directory(const Path& p, mode_t mode) {
    auto parent = open_dir(p, p.size() - 1);
    if (!parent) return parent.error();
    if (::mkdirat(parent->fd, p.back().c_str(), 0755) != 0) {
      if (errno != EEXIST) return sys("mkdir " + join(p, p.size()), errno);
      struct stat st;
      if (::fstatat(parent->fd, p.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
        return bad("duplicate entry '" + join(p, p.size()) + "'");
    } else {
      ++stats_.dirs;
    }
    std::string rel = join(p, p.size());
    dirs_.insert(rel);
    dir_modes_[rel] = mode;
    return Status::Ok();
  }

  Status symlink(const Path& p, const std::string& target) {
    if (target.empty()) return bad("symlink '" + join(p, p.size()) + "' has an empty target");
    if (target.size() > lim_.max_path) return bad("symlink target too long");
    if (target[0] == '/') return bad("symlink '" + join(p, p.size()) + "' -> '" + target + "' is absolute");
    // Lexical containment; check_symlinks() later refuses targets that pass through other links.
    Path stack(p.begin(), p.end() - 1);
    size_t start = 0;
    while (start <= target.size()) {
      size_t end = target.find('/', start);
      if (end == std::string::npos) end = target.size();
      std::string c = target.substr(start, end - start);
      if (c == "..") {
        if (stack.empty()) return bad("symlink '" + join(p, p.size()) + "' -> '" + target + "' escapes the release");
        stack.pop_back();
      } else if (!c.empty() && c != ".") {
        stack.push_back(c);
      }
      start = end + 1;
    }
    auto parent = open_dir(p, p.size() - 1);
    if (!parent) return parent.error();
    if (::symlinkat(target.c_str(), parent->fd, p.back().c_str()) != 0) {
      if (errno == EEXIST) return bad("duplicate entry '" + join(p, p.size()) + "'");
      return sys("symlink " + join(p, p.size()), errno);
    }
    links_.push_back({p, target});
    ++stats_.symlinks;
    return Status::Ok();
  }

  // With every entry in place: a link's target may only climb through real directories, so
  // `a -> .` followed by `b -> a/..` cannot reach outside the release.
  Status check_symlinks() {
    for (const auto& [p, target] : links_) {
      Path stack(p.begin(), p.end() - 1);
      std::vector<std::string> comps;
      size_t start = 0;
      while (start <= target.size()) {
        size_t end = target.find('/', start);
        if (end == std::string::npos) end = target.size();
        std::string c = target.substr(start, end - start);
        if (!c.empty() && c != ".") comps.push_back(c);
        start = end + 1;
      }
      for (size_t i = 0; i < comps.size(); ++i) {
        if (comps[i] == "..") {
          if (stack.empty()) return bad("symlink '" + join(p, p.size()) + "' escapes the release");
          stack.pop_back();
          continue;
        }
        stack.push_back(comps[i]);
        bool last = i + 1 == comps.size();
        bool later_dotdot =
            std::find(comps.begin() + static_cast<std::ptrdiff_t>(i) + 1, comps.end(), "..") != comps.end();
        if (last || !later_dotdot) continue;
        struct stat st;
        std::string rel = join(stack, stack.size());
        if (::fstatat(root_.fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
          return bad("symlink '" + join(p, p.size()) + "' -> '" + target + "' climbs through another symlink");
      }
    }
    return Status::Ok();
  }

  // Applies directory modes (kept writable for us until now) and makes every directory durable.
  Status finish_dirs() {
    std::vector<std::string> all(dirs_.begin(), dirs_.end());
    std::sort(all.begin(), all.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const auto& rel : all) {
      Path p;
      if (!rel.empty()) {
        auto sp = split_path(rel, lim_.max_path);
        if (!sp) return sp.error();
        p = *sp;
      }
      auto fd = open_dir(p, p.size());
      if (!fd) return fd.error();
      if (lim_.fsync && ::fsync(fd->fd) != 0) return sys("fsync dir " + rel, errno);
      auto it = dir_modes_.find(rel);
      if (it != dir_modes_.end() && ::fchmod(fd->fd, it->second | 0700) != 0) return sys("chmod " + rel, errno);
    }
    return Status::Ok();
  }

  Status read_data(uint64_t size, std::string* out) {
    out->resize(size);
    size_t got = 0;
    if (!read_exact(in_, out->data(), size, &got)) return bad("truncated entry data");
    consumed_ += size;
    return skip_padding(size);
  }

  Status skip_data(uint64_t size) {
    std::string sink;
    if (size > (1 << 20)) return bad("unexpected data on a non-file entry");
    return read_data(size, &sink);
  }

  Status skip_padding(uint64_t size) {
    size_t pad = (kBlock - size % kBlock) % kBlock;
    if (pad == 0) return Status::Ok();
    char buf[kBlock];
    size_t got = 0;
    if (!read_exact(in_, buf, pad, &got)) return bad("truncated padding");
    consumed_ += pad;
    return Status::Ok();
  }

  std::istream& in_;
  std::string dir_;
  TarLimits lim_;
  Fd root_;
  TarStats stats_;
  uint64_t consumed_ = 0;
  uint64_t entries_ = 0;
  std::optional<std::string> long_name_, long_link_;
  std::set<std::string> dirs_;
  std::map<std::string, mode_t> dir_modes_;
  std::vector<std::pair<Path, std::string>> links_;
};

}  // namespace

Expected<TarStats> extract_tar(std::istream& in, const std::string& target_dir, const TarLimits& limits) {
  return Extractor(in, target_dir, limits).run();
}

Expected<TarStats> extract_tar_file(const std::string& archive_path, const std::string& target_dir, TarLimits limits) {
  std::ifstream in(archive_path, std::ios::binary);
  if (!in) return make_error("io", "cannot open " + archive_path);
  struct stat st;
  if (::stat(archive_path.c_str(), &st) != 0) return sys("stat " + archive_path, errno);
  limits.archive_size = std::min<uint64_t>(limits.archive_size, static_cast<uint64_t>(st.st_size));
  return extract_tar(in, target_dir, limits);
}

}  // namespace gantry::agent
