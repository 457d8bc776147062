// Serving release artifacts to agents (FetchChunk -> Chunk), under a bound on the bytes of
// Chunk frames queued in ZeroMQ and not yet written, shared fairly between hosts: each host may
// hold at most its share of that budget, so a host that requests chunks and never reads them
// (a stalled or hostile peer) holds its share only and the others keep downloading.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/protocol/messages.h"
#include "common/util/clock.h"
#include "coordinator/server/agent_sender.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/metrics.h"
#include "coordinator/server/missing_artifacts.h"
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
  // A request that waited this long is dropped: its host is not reading (the agent asks again
  // after its own timeout), and it gives up its place in the queue.
  static constexpr Millis kMaxWaitMs = 30000;

  ArtifactServer(store::Store& store, ArtifactStore& artifacts, AgentLink& link, Metrics& metrics, const Clock& clock,
                 int64_t budget = kChunkQueueBudget);

  // A FetchChunk from connection `identity`: answered now, or queued while the budget or the
  // host's share of it is spent.
  void on_fetch(const std::string& identity, const proto::FetchChunk& f);
  // Answers queued requests, one per host in turn, while the budget and each host's share allow.
  void serve_deferred();
  // Where an artifact the store names but this coordinator lacks comes from (peer coordinators:
  // peer_artifact_fetcher.h). Its requests wait, unanswered, while it is fetched, and are
  // answered when the fetch ends: served, or ErrorMsg not_found if no peer gave it. Unset: such
  // a request gets ErrorMsg io, as before.
  void set_missing(MissingArtifacts* missing);
  // Requests waiting for an artifact being fetched from a peer, all hosts.
  size_t awaiting_peer() const { return awaiting_count_; }
  static constexpr size_t kMaxAwaitingPeer = 4096;  // more are dropped (their agents ask again)
  bool has_deferred() const { return deferred_ > 0; }
  int64_t bytes_queued() const { return queued_->load(std::memory_order_relaxed); }
  // Queued bytes of one connection's frames (0 for one not downloading).
  int64_t bytes_queued(const std::string& identity) const;
  // What one host may hold: the budget over the hosts downloading now, at most a quarter of it
  // (two windows of 1 MiB chunks), at least one byte (a host holding nothing may always get one
  // chunk while the budget allows).
  int64_t share() const;

 private:
  struct Waiting {
    proto::FetchChunk f;
    Millis since;
  };
  struct Host {
    std::shared_ptr<std::atomic<int64_t>> queued = std::make_shared<std::atomic<int64_t>>(0);
    std::deque<Waiting> waiting;
  };
  bool may_send(const Host& h) const;
  void answer(const std::string& identity, Host& host, const proto::FetchChunk& f);
  // Forgets hosts with nothing queued or waiting (their entries only cost lookups).
  void forget_idle();
  // A fetch from peers ended (MissingArtifacts listener): the requests that waited for it.
  void on_peer_fetch(const std::string& sha256, const Status& result);

  store::Store& store_;
  ArtifactStore& artifacts_;
  AgentLink& link_;
  Metrics& metrics_;
  const Clock& clock_;
  const int64_t budget_;
  // sha256 -> (path, size) of artifacts being served. A release never changes once uploaded,
  // and every FetchChunk needs these: a store query per chunk cost a prepared statement each.
  std::map<std::string, std::pair<std::string, uint64_t>> served_;
  std::shared_ptr<std::atomic<int64_t>> queued_ = std::make_shared<std::atomic<int64_t>>(0);
  std::map<std::string, Host> hosts_;  // by connection: those downloading now
  size_t deferred_ = 0;                // requests waiting, all hosts
  std::string next_turn_;              // round robin: the host served first by the next pass
  uint32_t fetches_since_sweep_ = 0;
  MissingArtifacts* missing_ = nullptr;
  // sha256 -> (connection, request) of requests for an artifact being fetched from peers.
  std::map<std::string, std::vector<std::pair<std::string, proto::FetchChunk>>> awaiting_;
  size_t awaiting_count_ = 0;
};

}  // namespace gantry::coordinator
