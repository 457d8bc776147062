#include "coordinator/server/peer_artifact_fetcher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/util/names.h"
#include "common/util/sha256.h"
#include "common/util/text.h"

namespace gantry::coordinator {

namespace {

spdlog::logger* LP() {
  static const auto l = log::get("peer");
  return l.get();
}

// The temp file of a fetch: beside the artifacts, apart from an operator upload's <sha>.part.
std::string temp_path(const std::string& dir, const std::string& sha) { return dir + "/" + sha + ".peer"; }

// One attempt at one peer: every byte into `fd` (truncated first), hashed as written. Ok with
// the digest; an error says why this peer is no good (code "not_found" when it lacks it, "disk"
// when the fault is ours and no other peer can help).
Expected<std::string> fetch_from(const std::string& endpoint, const PeerArtifactFetcher::Job& job, int fd,
                                 ChunkSource& source, const PeerArtifactFetcher::Options& o,
                                 const std::atomic<bool>& cancel) {
  if (::ftruncate(fd, 0) != 0) return make_error("disk", std::string("truncate: ") + std::strerror(errno));
  Sha256 hash;
  uint64_t at = 0;
  while (at < job.size) {
    if (cancel.load()) return make_error("cancelled", "the fetch was cancelled");
    const auto want = static_cast<uint32_t>(std::min<uint64_t>(o.chunk_bytes, job.size - at));
    Expected<ChunkSource::Piece> got = make_error("timeout", "not tried");
    for (int attempt = 1; attempt <= std::max(1, o.attempts_per_chunk); ++attempt) {
      got = source.read(endpoint, job.sha256, at, want, cancel);
      if (got || got.error().code == "not_found" || got.error().code == "cancelled" || got.error().code == "endpoint")
        break;
      LP()->debug("chunk at {} of {} from {}: attempt {} failed: {}", at, job.sha256, endpoint, attempt,
                  got.error().message);
    }
    if (!got) return got.error();
    // The release row is the truth: a peer that disagrees about the size or sends more than
    // asked (or nothing before the end) is not believed for anything.
    if (got->size != job.size)
      return make_error("lying", "peer " + endpoint + " says the artifact has " + std::to_string(got->size) +
                                     " bytes; the release says " + std::to_string(job.size));
    if (got->data.empty() || got->data.size() > want)
      return make_error("lying", "peer " + endpoint + " sent " + std::to_string(got->data.size()) +
                                     " bytes at offset " + std::to_string(at) + " for a request of " +
                                     std::to_string(want));
    const char* p = got->data.data();
    size_t left = got->data.size();
    auto off = static_cast<off_t>(at);
    while (left > 0) {
      ssize_t n = ::pwrite(fd, p, left, off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return make_error("disk", std::string("write: ") + (n < 0 ? std::strerror(errno) : "no progress"));
      p += n;
      off += n;
      left -= static_cast<size_t>(n);
    }
    hash.update(got->data);
    at += got->data.size();
  }
  if (::fsync(fd) != 0) return make_error("disk", std::string("fsync: ") + std::strerror(errno));
  return hash.hex_digest();
}

}  // namespace

PeerArtifactFetcher::PeerArtifactFetcher(std::string artifact_dir, PeerEndpoints& peers,
                                         std::unique_ptr<ChunkSource> source)
    : PeerArtifactFetcher(std::move(artifact_dir), peers, std::move(source), Options{}) {}

PeerArtifactFetcher::PeerArtifactFetcher(std::string artifact_dir, PeerEndpoints& peers,
                                         std::unique_ptr<ChunkSource> source, Options options)
    : dir_(std::move(artifact_dir)), peers_(peers), source_(std::move(source)), options_(options) {
  // What a fetch cut short by a crash left: nothing reads it, and a new fetch starts over.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (e.path().extension() == ".peer") std::filesystem::remove(e.path(), ec);
  }
  worker_ = std::thread([this] { work(); });
}

PeerArtifactFetcher::~PeerArtifactFetcher() {
  stop_.store(true);
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

bool PeerArtifactFetcher::want(const store::ReleaseRow& r) {
  if (wanted_.count(r.sha256)) return true;
  // A row may come from outside (etcd): its digest names a file, its size bounds the copy.
  if (!is_sha256_hex(r.sha256) || r.size == 0 || r.size > kMaxArtifactBytes) {
    LP()->error("release {} {} names no artifact that can be fetched (sha256 {}, {} bytes); skipped",
                safe_text(r.service, 64), safe_text(r.version, 64), safe_text(r.sha256, 80), r.size);
    return false;
  }
  Job job{r.sha256, r.size, r.service + " " + r.version, {}};  // the peers: looked up by the worker
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (queue_.size() >= options_.max_queued) return false;
    queue_.push_back(std::move(job));
  }
  wanted_.insert(r.sha256);
  cv_.notify_one();
  return true;
}

void PeerArtifactFetcher::deliver() {
  std::vector<Ended> ended;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (ended_.empty()) return;
    ended.swap(ended_);
  }
  for (const auto& e : ended) {
    wanted_.erase(e.sha256);
    if (metrics_ && e.result.ok()) {
      metrics_->peer_fetches_ok++;
      metrics_->peer_fetch_bytes += e.size;
    } else if (metrics_ && e.result.error().code != "cancelled") {
      metrics_->peer_fetches_failed++;
    }
    for (const auto& f : listeners_) f(e.sha256, e.result);
  }
}

bool PeerArtifactFetcher::wait_idle(Millis timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  return idle_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                           [this] { return queue_.empty() && !running_job_; });
}

void PeerArtifactFetcher::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stop_.load() || !queue_.empty(); });
      if (stop_.load()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      running_job_ = true;
    }
    Status st = make_error("internal", "not run");
    try {
      // Here, not in want(): the lookup may be slow (etcd), and the loop must not wait on it.
      job.endpoints = peers_.operator_endpoints();
      st = fetch(dir_, job, *source_, options_, stop_);
    } catch (const std::exception& e) {
      // Nothing a peer sends may end this thread.
      st = make_error("internal", std::string("fetch failed: ") + e.what());
    }
    if (st.ok())
      LP()->info("artifact {} ({}, {} bytes) fetched from a peer coordinator, sha256 checked", job.sha256, job.what,
                 job.size);
    else if (st.error().code != "cancelled")
      LP()->error("cannot fetch artifact {} ({}) from a peer coordinator: {}", job.sha256, job.what,
                  st.error().message);
    {
      std::lock_guard<std::mutex> lk(mu_);
      ended_.push_back({job.sha256, job.size, st});
      running_job_ = false;
    }
    idle_cv_.notify_all();
  }
}

Status PeerArtifactFetcher::fetch(const std::string& dir, const Job& job, ChunkSource& source, const Options& o,
                                  const std::atomic<bool>& cancel) {
  if (!is_sha256_hex(job.sha256) || job.size == 0 || job.size > kMaxArtifactBytes)
    return make_error("invalid", "not an artifact to fetch: sha256 " + safe_text(job.sha256, 80) + ", " +
                                     std::to_string(job.size) + " bytes");
  const std::string final_path = dir + "/" + job.sha256;
  if (fs::exists(final_path)) return Status::Ok();
  if (job.endpoints.empty())
    return make_error("unavailable", "no peer coordinator is known to fetch artifact " + job.sha256 + " from");
  const std::string tmp = temp_path(dir, job.sha256);
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return make_error("io", "open " + tmp + ": " + std::strerror(errno));
  std::string why;
  for (const auto& ep : job.endpoints) {
    auto digest = fetch_from(ep, job, fd, source, o, cancel);
    if (digest && *digest == job.sha256) {
      ::close(fd);
      if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        return make_error("io", "rename " + tmp + ": " + std::strerror(e));
      }
      return fs::fsync_dir(dir);
    }
    const std::string what =
        digest ? "peer " + safe_text(ep, 128) + " sent bytes whose sha256 is " + *digest + "; discarded"
               : digest.error().message;
    if (digest) LP()->warn("artifact {} ({}): {}", job.sha256, job.what, what);
    why += (why.empty() ? "" : "; ") + what;
    if (!digest && (digest.error().code == "disk" || digest.error().code == "cancelled")) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return make_error(digest.error().code == "disk" ? "io" : "cancelled",
                        "fetch of artifact " + job.sha256 + ": " + digest.error().message);
    }
  }
  ::close(fd);
  ::unlink(tmp.c_str());
  return make_error("unavailable", "no peer coordinator gave artifact " + job.sha256 + " (" + job.what + "): " + why);
}

}  // namespace gantry::coordinator
