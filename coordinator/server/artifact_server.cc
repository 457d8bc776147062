#include "coordinator/server/artifact_server.h"

#include <algorithm>
#include <cstring>

#include "common/protocol/codec.h"
#include "common/util/log.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}

// One outgoing Chunk frame; ZeroMQ's I/O thread frees it once written and gives its bytes
// back to the budget.
struct ChunkFrame {
  std::shared_ptr<std::atomic<int64_t>> queued;
  size_t size;
  std::unique_ptr<char[]> bytes;
};
}  // namespace

ArtifactServer::ArtifactServer(store::Store& store, ArtifactStore& artifacts, AgentLink& link, Metrics& metrics, int64_t budget)
    : store_(store), artifacts_(artifacts), link_(link), metrics_(metrics), budget_(budget) {}

void ArtifactServer::on_fetch(const std::string& identity, const proto::FetchChunk& f) {
  if (deferred_.empty() && bytes_queued() < budget_) {
    answer(identity, f);
    return;
  }
  size_t& n = deferred_per_host_[identity];
  if (n >= kMaxDeferredPerHost) {
    L()->debug("dropping a FetchChunk from {}: {} of its requests already wait", identity, n);
    return;
  }
  ++n;
  deferred_.emplace_back(identity, f);
}

void ArtifactServer::serve_deferred() {
  while (!deferred_.empty() && bytes_queued() < budget_) {
    auto [identity, f] = std::move(deferred_.front());
    deferred_.pop_front();
    if (auto it = deferred_per_host_.find(identity); it != deferred_per_host_.end() && --it->second == 0)
      deferred_per_host_.erase(it);
    answer(identity, f);
  }
}

void ArtifactServer::answer(const std::string& identity, const proto::FetchChunk& f) {
  auto known = served_.find(f.sha256);
  if (known == served_.end()) {
    auto rel = store_.release_by_sha(f.sha256);
    if (!rel) L()->error("cannot look up artifact {}: {}", f.sha256, rel.error().message);
    if (!rel || !rel->has_value()) {
      link_.send(identity, proto::ErrorMsg{"not_found", "no artifact with that digest", static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
      return;
    }
    if (served_.size() >= 256) served_.clear();
    known = served_.emplace(f.sha256, std::make_pair((*rel)->path, (*rel)->size)).first;
  }
  const auto& [path, size] = known->second;
  if (f.offset > size) {
    link_.send(identity, proto::ErrorMsg{"range", "offset past the end of the artifact", static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
    return;
  }
  // The bytes are read straight into the outgoing frame behind the encoded head: one copy
  // (the read) instead of four (read, msgpack buffer, string, zmq message); same wire bytes.
  size_t want = static_cast<size_t>(std::min<uint64_t>({f.length, proto::kMaxChunkBytes, size - f.offset}));
  std::string head = proto::encode_chunk_head(f.sha256, f.offset, size, want);
  const size_t total = head.size() + want;
  auto out = std::make_unique<ChunkFrame>(ChunkFrame{queued_, total, std::unique_ptr<char[]>(new char[total])});
  std::memcpy(out->bytes.get(), head.data(), head.size());
  auto got = artifacts_.read_into(path, f.offset, out->bytes.get() + head.size(), want);
  if (!got) {
    L()->error("cannot read artifact {}: {}", path, got.error().message);
    link_.send(identity, proto::ErrorMsg{"io", got.error().message, static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
    return;
  }
  metrics_.chunk_bytes += *got;
  if (*got < want) {  // the file is shorter than its record: send what is there
    link_.send(identity, proto::Chunk{f.sha256, f.offset, size, std::string(out->bytes.get() + head.size(), *got)});
    return;
  }
  queued_->fetch_add(static_cast<int64_t>(total), std::memory_order_relaxed);
  char* data = out->bytes.get();
  zmq::message_t frame(data, total, +[](void*, void* hint) {
    std::unique_ptr<ChunkFrame> done(static_cast<ChunkFrame*>(hint));
    done->queued->fetch_sub(static_cast<int64_t>(done->size), std::memory_order_relaxed);
  }, out.release());
  if (auto st = link_.send_frame(identity, std::move(frame)); !st.ok())
    L()->debug("send chunk to {} failed: {}", identity, st.error().message);
}

}  // namespace gantry::coordinator
