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
  std::shared_ptr<std::atomic<int64_t>> queued, host_queued;
  size_t size;
  std::unique_ptr<char[]> bytes;
};
}  // namespace

ArtifactServer::ArtifactServer(store::Store& store, ArtifactStore& artifacts, AgentLink& link, Metrics& metrics,
                               const Clock& clock, int64_t budget)
    : store_(store), artifacts_(artifacts), link_(link), metrics_(metrics), clock_(clock), budget_(budget) {}

int64_t ArtifactServer::bytes_queued(const std::string& identity) const {
  auto it = hosts_.find(identity);
  return it == hosts_.end() ? 0 : it->second.queued->load(std::memory_order_relaxed);
}

int64_t ArtifactServer::share() const {
  const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(hosts_.size()));
  return std::clamp<int64_t>(budget_ / n, 1, std::max<int64_t>(1, budget_ / 4));
}

bool ArtifactServer::may_send(const Host& h) const {
  return bytes_queued() < budget_ && h.queued->load(std::memory_order_relaxed) < share();
}

void ArtifactServer::on_fetch(const std::string& identity, const proto::FetchChunk& f) {
  if (++fetches_since_sweep_ >= 1024) forget_idle();
  Host& host = hosts_[identity];
  if (host.waiting.empty() && may_send(host)) {
    answer(identity, host, f);
    return;
  }
  if (host.waiting.size() >= kMaxDeferredPerHost) {
    L()->debug("dropping a FetchChunk from {}: {} of its requests already wait", identity, host.waiting.size());
    return;
  }
  host.waiting.push_back({f, clock_.now_ms()});
  ++deferred_;
}

void ArtifactServer::serve_deferred() {
  const Millis now = clock_.now_ms();
  // Rounds over the hosts with requests waiting, starting after the one served last: one
  // request per host per round, skipping hosts at their share, until the budget is spent or a
  // round sends nothing.
  bool sent = true;
  while (sent && deferred_ > 0 && bytes_queued() < budget_) {
    sent = false;
    auto it = hosts_.lower_bound(next_turn_);
    for (size_t visited = 0, n = hosts_.size(); visited < n && bytes_queued() < budget_; ++visited, ++it) {
      if (it == hosts_.end()) it = hosts_.begin();
      Host& host = it->second;
      while (!host.waiting.empty() && now - host.waiting.front().since >= kMaxWaitMs) {
        L()->debug("dropping a FetchChunk from {}: it waited {} ms (the host is not reading)", it->first,
                   now - host.waiting.front().since);
        host.waiting.pop_front();
        --deferred_;
      }
      if (host.waiting.empty() || !may_send(host)) continue;
      proto::FetchChunk f = std::move(host.waiting.front().f);
      host.waiting.pop_front();
      --deferred_;
      answer(it->first, host, f);
      sent = true;
      auto after = std::next(it);
      next_turn_ = after == hosts_.end() ? std::string() : after->first;
    }
  }
  // Requests of hosts at their share wait for their own frames to be written; the ones that
  // wait too long are dropped above. Either way nothing here waits on a slow host.
  if (deferred_ > 0) {
    for (auto& [id, host] : hosts_) {
      while (!host.waiting.empty() && now - host.waiting.front().since >= kMaxWaitMs) {
        host.waiting.pop_front();
        --deferred_;
      }
    }
  }
  forget_idle();
}

void ArtifactServer::forget_idle() {
  fetches_since_sweep_ = 0;
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    if (it->second.waiting.empty() && it->second.queued->load(std::memory_order_relaxed) <= 0)
      it = hosts_.erase(it);
    else
      ++it;
  }
}

void ArtifactServer::set_missing(MissingArtifacts* missing) {
  missing_ = missing;
  if (missing_)
    missing_->subscribe([this](const std::string& sha, const Status& result) { on_peer_fetch(sha, result); });
}

void ArtifactServer::on_peer_fetch(const std::string& sha256, const Status& result) {
  auto it = awaiting_.find(sha256);
  if (it == awaiting_.end()) return;
  auto waiting = std::move(it->second);
  awaiting_.erase(it);
  awaiting_count_ -= waiting.size();
  for (auto& [identity, f] : waiting) {
    if (result.ok()) {
      on_fetch(identity, f);  // under the budget like any other request
    } else {
      link_.send(identity, proto::ErrorMsg{"not_found",
                                           "this coordinator lacks the artifact and no peer coordinator gave it: " +
                                               result.error().message.substr(0, 3000),
                                           static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
    }
  }
}

void ArtifactServer::answer(const std::string& identity, Host& host, const proto::FetchChunk& f) {
  auto known = served_.find(f.sha256);
  if (known == served_.end()) {
    auto rel = store_.release_by_sha(f.sha256);
    if (!rel) L()->error("cannot look up artifact {}: {}", f.sha256, rel.error().message);
    if (!rel || !rel->has_value()) {
      link_.send(identity, proto::ErrorMsg{"not_found", "no artifact with that digest",
                                           static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
      return;
    }
    // The release is known (the store is shared by every coordinator of an installation) but
    // its file may not be here yet: it is fetched from a peer and the request waits for it.
    if (missing_ && !artifacts_.has(f.sha256)) {
      if (awaiting_count_ >= kMaxAwaitingPeer) {
        L()->debug("dropping a FetchChunk from {}: {} requests already wait for peers", identity, awaiting_count_);
        return;
      }
      if (!missing_->fetching(f.sha256)) {
        if (!missing_->want(**rel)) {
          link_.send(identity, proto::ErrorMsg{"io", "this coordinator lacks the artifact and cannot fetch it now",
                                               static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
          return;
        }
        L()->info("artifact {} ({} {}) is not here; fetching it from a peer coordinator for {}", f.sha256,
                  (*rel)->service, (*rel)->version, identity);
      }
      awaiting_[f.sha256].emplace_back(identity, f);
      ++awaiting_count_;
      return;
    }
    if (served_.size() >= 256) served_.clear();
    // Its file in this coordinator's artifact dir: a row's path is where the coordinator that
    // stored it kept it, which on another coordinator may be elsewhere.
    known = served_.emplace(f.sha256, std::make_pair(artifacts_.path_for(f.sha256), (*rel)->size)).first;
  }
  const auto& [path, size] = known->second;
  if (f.offset > size) {
    link_.send(identity, proto::ErrorMsg{"range", "offset past the end of the artifact",
                                         static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
    return;
  }
  // The bytes are read straight into the outgoing frame behind the encoded head: one copy
  // (the read) instead of four (read, msgpack buffer, string, zmq message); same wire bytes.
  size_t want = static_cast<size_t>(std::min<uint64_t>({f.length, proto::kMaxChunkBytes, size - f.offset}));
  std::string head = proto::encode_chunk_head(f.sha256, f.offset, size, want);
  const size_t total = head.size() + want;
  auto out =
      std::make_unique<ChunkFrame>(ChunkFrame{queued_, host.queued, total, std::unique_ptr<char[]>(new char[total])});
  std::memcpy(out->bytes.get(), head.data(), head.size());
  auto got = artifacts_.read_into(path, f.offset, out->bytes.get() + head.size(), want);
  if (!got) {
    L()->error("cannot read artifact {}: {}", path, got.error().message);
    link_.send(identity, proto::ErrorMsg{"io", got.error().message, static_cast<uint16_t>(proto::MsgType::kFetchChunk),
                                         f.sha256});
    return;
  }
  metrics_.chunk_bytes += *got;
  if (*got < want) {  // the file is shorter than its record: send what is there
    link_.send(identity, proto::Chunk{f.sha256, f.offset, size, std::string(out->bytes.get() + head.size(), *got)});
    return;
  }
  queued_->fetch_add(static_cast<int64_t>(total), std::memory_order_relaxed);
  host.queued->fetch_add(static_cast<int64_t>(total), std::memory_order_relaxed);
  char* data = out->bytes.get();
  zmq::message_t frame(
      data, total,
      +[](void*, void* hint) {
        std::unique_ptr<ChunkFrame> done(static_cast<ChunkFrame*>(hint));
        done->queued->fetch_sub(static_cast<int64_t>(done->size), std::memory_order_relaxed);
        done->host_queued->fetch_sub(static_cast<int64_t>(done->size), std::memory_order_relaxed);
      },
      out.release());
  if (auto st = link_.send_frame(identity, std::move(frame)); !st.ok())
    L()->debug("send chunk to {} failed: {}", identity, st.error().message);
}

}  // namespace gantry::coordinator
