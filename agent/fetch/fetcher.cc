#include "agent/fetch/fetcher.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/util/fs.h"
#include "common/util/log.h"

namespace gantry::agent {

Fetcher::Fetcher(std::string part_path, std::string sha256, uint64_t size, const Clock& clock, Send send)
    : path_(std::move(part_path)), sha_(std::move(sha256)), size_(size), clock_(clock), send_(std::move(send)) {}

namespace {
// O_DIRECT alignment of buffer, offset and length: a page covers 512- and 4096-byte sectors.
constexpr uint64_t kDirectAlign = 4096;
static_assert(Fetcher::kDirectBatch % kDirectAlign == 0 && Fetcher::kDirectBatch >= Fetcher::kChunkBytes);
}  // namespace

Fetcher::~Fetcher() {
  if (state_ == State::kRunning && direct_) (void)flush_direct();  // keep what was received for a resume
  end_direct();
  if (fd_ >= 0) ::close(fd_);
}

void Fetcher::end_direct() {
  direct_ = false;
  batched_ = 0;
  if (bounce_) ::munmap(bounce_, kDirectBatch);
  bounce_ = nullptr;
  if (fd_ >= 0) {
    if (int fl = ::fcntl(fd_, F_GETFL); fl >= 0 && (fl & O_DIRECT)) (void)::fcntl(fd_, F_SETFL, fl & ~O_DIRECT);
  }
}

Status Fetcher::start() {
  if (Status st = fs::make_dirs(fs::dirname(path_)); !st.ok()) return st;
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return make_error("io", "open " + path_ + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd_, &st) != 0) return make_error("io", "stat " + path_ + ": " + std::strerror(errno));
  uint64_t have = static_cast<uint64_t>(st.st_size);
  if (have > size_) {
    if (::ftruncate(fd_, 0) != 0) return make_error("io", "truncate " + path_ + ": " + std::strerror(errno));
    have = 0;
  }
  written_ = next_ = have;
  last_progress_ = clock_.now_ms();
  if (written_ == size_) {
    // Complete before an interruption: digest_ stays empty, so the file is read back and hashed
    // (Driver::finish_download) before anything uses it.
    state_ = State::kComplete;
    return Status::Ok();
  }
  if (have > 0) {
    log::get("agent.fetch")
        ->info("resuming download of {} at {} of {} bytes (hashing the bytes already there)", sha_, have, size_);
    if (Status st = sha256_update_from_fd(hash_, fd_, have, path_); !st.ok()) return st;
  }
  // O_DIRECT from here on if the prefix ends on a block and the file system takes it.
  if (have % kDirectAlign == 0) {
    void* b = ::mmap(nullptr, kDirectBatch, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fl = ::fcntl(fd_, F_GETFL);
    if (b != MAP_FAILED && fl >= 0 && ::fcntl(fd_, F_SETFL, fl | O_DIRECT) == 0) {
      bounce_ = static_cast<char*>(b);
      direct_ = true;
    } else if (b != MAP_FAILED) {
      ::munmap(b, kDirectBatch);
    }
  }
  fill_window();
  return Status::Ok();
}

void Fetcher::request(uint64_t offset, uint32_t length) {
  outstanding_[offset] = length;
  send_(proto::FetchChunk{sha_, offset, length});
}

void Fetcher::fill_window() {
  while (state_ == State::kRunning && outstanding_.size() < kWindow && next_ < size_) {
    uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(kChunkBytes, size_ - next_));
    request(next_, len);
    next_ += len;
  }
}

void Fetcher::fail(std::string msg) {
  if (state_ != State::kRunning) return;
  state_ = State::kFailed;
  error_ = std::move(msg);
  outstanding_.clear();
  pending_.clear();
  end_direct();
}

void Fetcher::on_chunk(const proto::ChunkView& c) {
  if (state_ != State::kRunning || c.sha256 != sha_) return;
  if (c.total_size != size_) {
    fail("fetch failed: coordinator says the artifact is " + std::to_string(c.total_size) + " bytes, the order says " +
         std::to_string(size_));
    return;
  }
  auto it = outstanding_.find(c.offset);
  if (it == outstanding_.end() || c.data.empty()) return;  // duplicate or stale answer
  uint32_t asked = it->second;
  outstanding_.erase(it);
  size_t len = std::min<size_t>(c.data.size(), asked);
  if (len < asked) request(c.offset + len, static_cast<uint32_t>(asked - len));
  if (c.offset == written_) {
    // In order (the usual case): straight to disk, no copy.
    if (!append(c.data.data(), len)) return;
  } else {
    pending_[c.offset] = std::string(c.data.substr(0, len));
  }
  flush();
  fill_window();
}

bool Fetcher::append(const char* data, size_t len) {
  hash_.update(std::string_view(data, len));  // in order: append only ever extends the prefix
  if (direct_) {
    const bool last = written_ + len == size_;
    // Whole blocks only, except the artifact's last piece (padded, then cut back).
    if (len % kDirectAlign == 0 || last) {
      if (batched_ + len > kDirectBatch && !flush_direct()) return false;
      if (direct_) {
        std::memcpy(bounce_ + batched_, data, len);
        batched_ += len;
        written_ += len;
        last_progress_ = clock_.now_ms();
        return (batched_ < kDirectBatch && !last) || flush_direct();
      }
    } else {  // a short piece: what is batched goes out, then the page cache from here on
      if (!flush_direct()) return false;
      end_direct();
    }
  }
  if (!write_buffered(data, len, written_)) return false;
  written_ += len;
  last_progress_ = clock_.now_ms();
  return true;
}

bool Fetcher::write_buffered(const char* data, size_t len, uint64_t at) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = ::pwrite(fd_, data + off, len - off, static_cast<off_t>(at + off));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(std::string("fetch failed: write ") + path_ + ": " + std::strerror(errno));
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

bool Fetcher::flush_direct() {
  if (batched_ == 0) return true;
  const uint64_t at = written_ - batched_;  // the file's size: the batch goes right behind it
  const size_t len = batched_, padded = (len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  batched_ = 0;
  std::memset(bounce_ + len, 0, padded - len);
  size_t off = 0;
  while (off < padded) {
    ssize_t n = ::pwrite(fd_, bounce_ + off, padded - off, static_cast<off_t>(at + off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && off == 0) {
      // The file system refuses this alignment (or O_DIRECT writes at all): the batch and the
      // rest of the download go through the page cache.
      const bool ok = write_buffered(bounce_, len, at);
      end_direct();
      return ok;
    }
    if (n <= 0) {
      fail(std::string("fetch failed: write ") + path_ + ": " + (n < 0 ? std::strerror(errno) : "no progress"));
      return false;
    }
    off += static_cast<size_t>(n);
  }
  // The padding must not stay: a restarted agent resumes from the file's size.
  if (padded != len && ::ftruncate(fd_, static_cast<off_t>(at + len)) != 0) {
    fail(std::string("fetch failed: truncate ") + path_ + ": " + std::strerror(errno));
    return false;
  }
  return true;
}

void Fetcher::flush() {
  for (auto it = pending_.find(written_); it != pending_.end(); it = pending_.find(written_)) {
    if (!append(it->second.data(), it->second.size())) return;
    pending_.erase(it);
  }
  if (written_ == size_) finish();
}

void Fetcher::finish() {
  if (!flush_direct()) return;
  if (::fsync(fd_) != 0) {
    fail(std::string("fetch failed: fsync ") + path_ + ": " + std::strerror(errno));
    return;
  }
  std::string digest = hash_.hex_digest();
  if (digest != sha_) {
    // Same outcome as the driver's check of a file read back: nothing of it is used.
    ::close(fd_);
    fd_ = -1;
    (void)::unlink(path_.c_str());
    log::get("agent.fetch")->warn("download of {} has sha256 {}; deleted", sha_, digest);
    fail("digest mismatch: artifact has sha256 " + digest + ", expected " + sha_);
    return;
  }
  digest_ = std::move(digest);
  state_ = State::kComplete;
  end_direct();
  // The benchmarks (bench/run distribution) time the fleet's transfer by this line.
  log::get("agent.fetch")->info("download of {} complete: {} bytes on disk, sha256 checked", sha_, size_);
}

void Fetcher::on_error(const proto::ErrorMsg& e) {
  if (state_ != State::kRunning) return;
  bool ours =
      e.ref_id == sha_ || (e.ref_type == static_cast<uint16_t>(proto::MsgType::kFetchChunk) && e.ref_id.empty());
  if (!ours) return;
  fail("fetch failed: coordinator answered " + e.code + (e.message.empty() ? "" : ": " + e.message));
}

void Fetcher::resend() {
  if (state_ != State::kRunning) return;
  for (const auto& [off, len] : outstanding_) send_(proto::FetchChunk{sha_, off, len});
  last_progress_ = clock_.now_ms();
}

void Fetcher::check(Millis now) {
  if (state_ == State::kRunning && now - last_progress_ >= kStallMs)
    fail("fetch failed: no chunk received for " + std::to_string(kStallMs / 1000) + " s");
}

}  // namespace gantry::agent
