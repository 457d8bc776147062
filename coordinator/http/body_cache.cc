#include "coordinator/http/body_cache.h"

#include <zlib.h>

#include <atomic>
#include <chrono>
#include <stdexcept>

namespace gantry::coordinator {

std::string gzip_compress(const std::string& in, int level) {
  z_stream z{};
  // windowBits 15 + 16: a gzip header and trailer, what Content-Encoding: gzip means.
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  std::string out;
  out.resize(deflateBound(&z, static_cast<uLong>(in.size())));
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));  // zlib's API is not const; it only reads
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  const size_t n = z.total_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("deflate did not finish");
  out.resize(n);
  return out;
}

namespace {
// ETags of this process: a new process (a restart) never repeats one it did not make.
std::string etag_prefix() {
  static const std::string p = std::to_string(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  return p;
}
std::atomic<uint64_t> g_etags{0};
}  // namespace

EncodedBody BodyCache::get(std::shared_ptr<const std::string> body) {
  std::lock_guard<std::mutex> lk(mu_);
  if (last_.body == body && body) return last_;
  EncodedBody e;
  e.gzip = std::make_shared<const std::string>(gzip_compress(body ? *body : std::string(), 1));
  e.etag = "\"" + etag_prefix() + "-" + std::to_string(g_etags.fetch_add(1) + 1) + "\"";
  e.body = std::move(body);
  last_ = e;
  ++made_;
  return e;
}

uint64_t BodyCache::compressions() const {
  std::lock_guard<std::mutex> lk(mu_);
  return made_;
}

}  // namespace gantry::coordinator
