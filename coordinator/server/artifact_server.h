// Serving release artifacts to agents (FetchChunk -> Chunk), under a bound on the bytes of
// Chunk frames queued in ZeroMQ and not yet written: above it, requests wait here.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "common/protocol/messages.h"
#include "coordinator/server/agent_sender.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/metrics.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

class ArtifactServer {
 public:
  // Bytes of Chunk frames handed to ZeroMQ and not yet written to a socket (the I/O thread
  // subtracts a frame when it frees it). Above this new FetchChunks wait, so the coordinator's
  // memory stays flat however many agents download at once (without it: agents x window x
  // chunk, 2 MiB per downloading agent).
  static constexpr int64_t kChunkQueueBudget = 32 << 20;
  static constexpr size_t kMaxDeferredPerHost = 64;  // 8x an agent's window; more are dropped

  ArtifactServer(store::Store& store, ArtifactStore& artifacts, AgentLink& link, Metrics& metrics,
                 int64_t budget = kChunkQueueBudget);

  // A FetchChunk from connection `identity`: answered now, or queued while over budget.
  void on_fetch(const std::string& identity, const proto::FetchChunk& f);
  // Answers queued requests while the queued bytes are under budget.
  void serve_deferred();
  bool has_deferred() const { return !deferred_.empty(); }
  int64_t bytes_queued() const { return queued_->load(std::memory_order_relaxed); }

 private:
  void answer(const std::string& identity, const proto::FetchChunk& f);

  store::Store& store_;
  ArtifactStore& artifacts_;
  AgentLink& link_;
  Metrics& metrics_;
  const int64_t budget_;
  // sha256 -> (path, size) of artifacts being served. A release never changes once uploaded,
  // and every FetchChunk needs these: a store query per chunk cost a prepared statement each.
  std::map<std::string, std::pair<std::string, uint64_t>> served_;
  std::shared_ptr<std::atomic<int64_t>> queued_ = std::make_shared<std::atomic<int64_t>>(0);
  std::deque<std::pair<std::string, proto::FetchChunk>> deferred_;
  std::map<std::string, size_t> deferred_per_host_;
};

}  // namespace gantry::coordinator
