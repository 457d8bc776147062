// The encoded forms of a body many requests share (the /status snapshot, /metrics, the page):
// its gzip, made once by the first request that wants it, and an ETag naming it. At 10,000 hosts
// /status is several MB of JSON; compressing it once per snapshot instead of once per request
// keeps the cost of open status pages flat in their number (docs/BENCHMARKS.md, status-page).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace gantry::coordinator {

struct EncodedBody {
  std::shared_ptr<const std::string> body;  // as given
  std::shared_ptr<const std::string> gzip;  // gzip (RFC 1952) of body
  std::string etag;                         // quoted, unique to this body in this process
};

// gzip of `in` at zlib level `level` (1 fastest .. 9 smallest).
std::string gzip_compress(const std::string& in, int level);

class BodyCache {
 public:
  // The encoded forms of `body`. The same object (by identity) as the last call gets the same
  // answer without any work; another one is compressed now, on the caller's thread, while
  // concurrent callers wait for it rather than compress it again.
  EncodedBody get(std::shared_ptr<const std::string> body);

  uint64_t compressions() const;  // bodies compressed so far (tests)

 private:
  mutable std::mutex mu_;
  EncodedBody last_;
  uint64_t made_ = 0;
};

}  // namespace gantry::coordinator
