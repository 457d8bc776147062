// The coordinator daemon's composition root: it opens the store, builds the parts (rollout
// executor, agent channel, UDP heartbeats, artifact server, operator API, ZAP handler, status
// snapshot, checkpoint policy), binds the sockets, and runs the one event loop that feeds them.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/change_flag.h"
#include "coordinator/server/config.h"
#include "coordinator/server/heard_through.h"
#include "coordinator/server/metrics.h"

namespace gantry::store {
class Store;
}

namespace gantry::coordinator {

namespace analysis {
class AnalysisScheduler;
class HttpPromQuerier;
class ThreadedQueryRunner;
}  // namespace analysis
class AgentChannel;
struct BuiltView;
class AgentSender;
class ArtifactServer;
class ArtifactStore;
class CheckpointAtRest;
class Convergence;
class HttpRoutes;
class HttpServer;
class KeyRing;
class OperatorApi;
class ArtifactCopies;
class PeerArtifactFetcher;
class PeerEndpoints;
class PubSignalSink;
class RefusalLog;
class RequestedViews;
class RolloutExecutor;
class StatusSnapshot;
class UdpHeartbeats;
class ZapAuth;

class Coordinator {
 public:
  // `store`: the durable record to use; null opens the SQLite store in the state directory.
  // `epoch`: with a given store, the fencing epoch its leadership holds (0: store->bump_epoch()).
  Coordinator(Config cfg, Clock& clock, std::unique_ptr<store::Store> store = nullptr, uint64_t epoch = 0);
  ~Coordinator();

  // Where artifacts this coordinator lacks are copied from (peer coordinators, on the etcd
  // store); unset: nowhere. Before start().
  void set_peers(PeerEndpoints* peers) { peers_ = peers; }
  // Where the coordinators of the installation record the artifacts they hold: an upload is
  // acknowledged once every registered one holds it (server/artifact_copies.h); unset: once it
  // is stored here. Before start().
  void set_copies(ArtifactCopies* copies) { copies_ = copies; }
  // Opens the store, binds the sockets, restores active rollouts; writes endpoints.json.
  Status start();
  // Runs until `stop` becomes true (checked at least every 100 ms).
  void run(const std::atomic<bool>& stop);
  // Turns of the event loop so far (any thread may read it): the systemd watchdog pings only
  // while this moves, so a wedged loop gets the daemon restarted.
  uint64_t loop_turns() const { return loop_turns_.load(std::memory_order_relaxed); }

  // The endpoints actually bound (port 0 / * resolved).
  const std::map<std::string, std::string>& endpoints() const { return endpoints_; }

 private:
  Status bind_sockets();
  // One turn's work after poll; what escapes a part is logged and the loop goes on.
  void serve(const zmq::pollitem_t* items, const std::vector<zmq::pollitem_t>& auth_items);
  void on_timers();
  Millis poll_timeout_ms();
  BuiltView build_view(const std::string& key);  // for views_, on the loop

  bool secure() const { return cfg_.curve.enabled(); }

  Config cfg_;
  Clock& clock_;
  zmq::context_t ctx_;
  Metrics metrics_;
  ChangeFlag changed_;
  fleet::Registry registry_;
  uint64_t epoch_ = 0;
  std::map<std::string, std::string> endpoints_;
  std::unique_ptr<zmq::socket_t> agents_, pub_, operators_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<KeyRing> keys_;
  std::unique_ptr<RefusalLog> refusals_;
  std::unique_ptr<ZapAuth> zap_;  // null with --insecure-dev
  std::unique_ptr<AgentSender> sender_;
  std::unique_ptr<PubSignalSink> signals_;
  std::unique_ptr<RolloutExecutor> executor_;
  std::unique_ptr<Convergence> convergence_;
  // Metric analysis: the querier outlives the runner's thread, the runner the scheduler.
  std::unique_ptr<analysis::HttpPromQuerier> prom_;
  std::unique_ptr<analysis::ThreadedQueryRunner> query_runner_;
  std::unique_ptr<analysis::AnalysisScheduler> analysis_;
  std::unique_ptr<UdpHeartbeats> udp_;
  std::unique_ptr<ArtifactServer> artifact_server_;
  PeerEndpoints* peers_ = nullptr;
  ArtifactCopies* copies_ = nullptr;
  std::unique_ptr<PeerArtifactFetcher> peer_fetcher_;
  std::unique_ptr<AgentChannel> channel_;
  std::unique_ptr<OperatorApi> operator_api_;
  std::unique_ptr<StatusSnapshot> snapshot_;
  std::unique_ptr<CheckpointAtRest> checkpoint_;
  std::unique_ptr<RequestedViews> views_;  // /rollouts, /rollouts/ID
  std::unique_ptr<HttpRoutes> routes_;
  std::unique_ptr<HttpServer> http_;

  std::atomic<uint64_t> loop_turns_{0};
  Millis next_heartbeat_ = 0;
  Millis next_expiry_ = 0;
  // Up to when the agents' input is read: hosts' silence is measured there (set in run()).
  HeardThrough heard_{0, 0, 0};
  // Interrupt coalescing at rest: after a pass over the agent socket that held only heartbeats,
  // the socket is read again at most kRestBatchMs later, so 10,000 heartbeats a second wake the
  // loop ~100 times instead of thousands. Any other message ends it at the next pass; operator
  // requests are never held.
  static constexpr Millis kRestBatchMs = 10;
  bool agents_at_rest_ = false;
  Millis last_agent_drain_ = 0;
};

}  // namespace gantry::coordinator
