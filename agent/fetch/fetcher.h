// Pulls one artifact from the coordinator in chunks with credit-based flow control:
// at most `window` FetchChunk requests outstanding, each answered by one Chunk.
// The partial file always holds a contiguous prefix of the artifact, so a restarted
// agent resumes from its size. The bytes are hashed (sha256) as they are written, in order,
// so the file need not be read back: once all are on disk the digest is compared with the
// order's and a mismatch fails the fetch and deletes the file. A resumed download hashes the
// prefix already on disk first, so the digest always covers the whole file.
// The file is written with O_DIRECT where the file system allows it: the page-cache copy was
// the largest cost of a download (figure 6 in docs/BENCHMARKS.md), and the artifact is read
// once more, for extraction, so caching it buys nothing. Anything unaligned (a resumed file of
// an odd size, a short chunk) or a file system without O_DIRECT falls back to buffered writes.
// Main thread only (it sends on the agent's socket).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "common/protocol/codec.h"
#include "common/protocol/messages.h"
#include "common/util/clock.h"
#include "common/util/expected.h"
#include "common/util/sha256.h"

namespace gantry::agent {

class Fetcher {
 public:
  using Send = std::function<void(const proto::Message&)>;
  static constexpr uint32_t kChunkBytes = 256 * 1024;
  static constexpr size_t kWindow = 8;
  // With O_DIRECT, chunks are gathered into writes of up to this many bytes.
  static constexpr size_t kDirectBatch = 1024 * 1024;
  static constexpr Millis kStallMs = 30000;

  enum class State { kRunning, kComplete, kFailed };

  Fetcher(std::string part_path, std::string sha256, uint64_t size, const Clock& clock, Send send);
  ~Fetcher();
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  // Opens the partial file, keeps the bytes already there, and sends the first window.
  Status start();
  // A Chunk for any artifact; chunks of other artifacts or never requested are ignored.
  // In-order data is written (and hashed) straight from `c.data`, which need only live for the call.
  void on_chunk(const proto::ChunkView& c);
  // An ErrorMsg from the coordinator; fails the fetch if it names this artifact.
  void on_error(const proto::ErrorMsg& e);
  // Re-sends every outstanding request (after the connection was recreated).
  void resend();
  // Fails the fetch when no chunk arrived for kStallMs.
  void check(Millis now);
  // When check() must next run.
  Millis deadline() const { return last_progress_ + kStallMs; }

  State state() const { return state_; }
  const std::string& error() const { return error_; }
  uint64_t received() const { return written_; }
  const std::string& sha256() const { return sha_; }
  // Once complete: the sha256 of the bytes written, which then equals sha256().
  const std::string& digest() const { return digest_; }

  // Whether the bytes still go to the disk with O_DIRECT (for tests).
  bool direct() const { return direct_; }

 private:
  void fill_window();
  void request(uint64_t offset, uint32_t length);
  void fail(std::string msg);
  // Writes at the end of the prefix on disk; false (and the fetch failed) on a write error.
  bool append(const char* data, size_t len);
  bool write_buffered(const char* data, size_t len, uint64_t at);
  // O_DIRECT: writes the gathered batch behind the file's end, the artifact's last piece padded
  // to a block and the file cut back to its size. A file system that refuses it (EINVAL) gets
  // the batch and the rest of the download through the page cache. False: the fetch failed.
  bool flush_direct();
  // Back to the page cache for the rest of the download (drops an unwritten batch).
  void end_direct();
  void flush();
  // All bytes are on disk: fsync, compare the digest, and complete (or fail).
  void finish();

  std::string path_, sha_;
  uint64_t size_;
  const Clock& clock_;
  Send send_;
  int fd_ = -1;
  State state_ = State::kRunning;
  std::string error_;
  Sha256 hash_;  // of the prefix [0, written_)
  std::string digest_;
  uint64_t written_ = 0;  // contiguous prefix hashed; on disk but for the last batched_ bytes
  uint64_t next_ = 0;     // next offset to request
  Millis last_progress_ = 0;
  std::map<uint64_t, uint32_t> outstanding_;  // offset -> requested length
  std::map<uint64_t, std::string> pending_;   // received beyond the prefix, not yet written
  // Written with O_DIRECT from a page-aligned bounce buffer while the prefix stays aligned
  // (see start()): the bytes go from the chunk to the disk without a page-cache copy.
  bool direct_ = false;
  char* bounce_ = nullptr;  // kDirectBatch bytes, mmap'd (page-aligned) while direct_
  size_t batched_ = 0;      // bytes in bounce_ not yet written: [written_ - batched_, written_)
};

}  // namespace gantry::agent
