// The coordinator daemon: one event loop over the agent ROUTER, the operator ROUTER and
// the broadcast PUB, feeding the rollout state machine and carrying out its actions after
// they are persisted.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <unordered_map>
#include <mutex>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "common/protocol/messages.h"
#include "common/transport/udp_heartbeat.h"
#include "common/transport/zmq_transport.h"
#include "common/util/clock.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/config.h"
#include "coordinator/rollout/state_machine.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/keyring.h"
#include "coordinator/server/metrics.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

class HttpServer;

// Snapshot of what /status and /metrics serve; published by the loop, read by the HTTP thread.
struct Published {
  std::string status_json;
  std::string metrics_text;
};

class Coordinator {
 public:
  Coordinator(Config cfg, Clock& clock);
  ~Coordinator();

  // Opens the store, binds the sockets, restores active rollouts; writes endpoints.json.
  Status start();
  // Runs until `stop` becomes true (checked at least every 100 ms).
  void run(const std::atomic<bool>& stop);
  // Turns of the event loop so far (any thread may read it): the systemd watchdog pings only
  // while this moves, so a wedged loop gets the daemon restarted.
  uint64_t loop_turns() const { return loop_turns_.load(std::memory_order_relaxed); }

  // The endpoints actually bound (port 0 / * resolved).
  const std::map<std::string, std::string>& endpoints() const { return endpoints_; }

  // Called by the HTTP server thread; thread-safe.
  Published published() const;
  // For the HTTP thread: the snapshot, first asking the loop for a fresh one (and waiting up to
  // 2 s) if it is older than the refresh period. Marks the snapshot as watched.
  Published fresh_published();

 private:
  struct ActiveRollout {
    store::RolloutRow row;  // meta (state column not kept up to date here)
    rollout::State state;
    // rollout::next_deadline(state), kept with the state: the loop asks for it every turn and
    // it scans every host.
    Millis deadline = 0;
  };
  struct OpenOrder {
    store::OrderRow row;
    std::optional<proto::Order> wire;  // row.body as sent; empty if the stored body is corrupt
    Millis last_sent = 0;  // monotonic; 0 = never sent in this process
  };

  // ---- agent side
  void drain_agents();
  Status open_udp_heartbeats(const std::string& agent_endpoint);
  void drain_udp();
  void on_agent_message(const transport::Incoming& in);
  void on_hello(const std::string& identity, const proto::Hello& h);
  void on_report(fleet::HostRecord& host, const proto::Report& r);
  // Records in an ended rollout's log what a host that was still out when it ended runs now.
  void note_drift_after_end(const proto::Hello& h);
  void on_fetch(const std::string& identity, const proto::FetchChunk& f);
  void answer_fetch(const std::string& identity, const proto::FetchChunk& f);
  void serve_deferred_fetches();  // while the queued chunk bytes are under budget
  void send_order(OpenOrder& o);
  void send_to_host(const std::string& identity, const proto::Message& m);
  // How long `h` may go without hearing from us before a heartbeat is due.
  Millis heartbeat_period(const fleet::HostRecord& h) const;
  // Group commit: reports, acks and hellos read in one pass over the agent socket are
  // persisted together (one transaction per rollout), then acted on. Called at the end of
  // every pass and before anything that must see them applied (a hello, a timer).
  void flush_pending();

  // ---- authentication (CURVE + ZAP; all no-ops with --insecure-dev)
  bool secure() const { return cfg_.curve.enabled(); }
  void drain_zap();
  // Handshake failures (plaintext or garbage on a CURVE socket, refused keys), from socket monitors.
  void drain_monitor(zmq::socket_t& mon, const char* socket_name);
  // Logs a refused peer at most once a minute per key, so a refused agent cannot flood the log.
  void warn_refused(const std::string& key, const std::string& what);
  // An agent key lost its standing: its host stops counting as connected right away.
  void ask_for_hello(const std::string& identity, Millis now, proto::MsgType ref);
  void disconnect_host(const std::string& host_id, const std::string& why);

  // ---- operator side
  void drain_operators();
  proto::OpReply handle_op(const proto::OpRequest& req, const std::string& who, Role role = Role::kAdmin);
  using OpHandler = nlohmann::json (Coordinator::*)(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_hosts(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_status(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_release_get(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_release_upload(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_rollout_plan(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_rollout_start(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_rollout_get(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_rollout_control(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_rollback(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_history(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_audit(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_keys_list(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_keys_change(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_keys_accept_many(const nlohmann::json& args, const std::string& who);
  nlohmann::json op_keys_add_operator(const nlohmann::json& args, const std::string& who);

  // ---- rollouts
  // Steps rollout `id`; `result` (a report this event applies) is persisted with the step.
  Status apply(uint64_t id, const rollout::Event& ev, const store::ResultRow* result = nullptr);
  // Several events in order, persisted as one step; `results` are the reports they apply.
  // errors (optional) gets one status per event. `agent_reports`: the events are agents'
  // reports, which may be committed without an fsync when nothing is acted on (StepWrite::durable).
  Status apply_many(uint64_t id, const std::vector<rollout::Event>& evs, std::vector<store::ResultRow> results,
                    std::vector<Status>* errors = nullptr, bool agent_reports = false);
  // After a step could not be saved: the rollout's state back as last saved (or exit).
  void restore_saved_state(ActiveRollout& a);
  uint64_t start_rollout(const std::string& service, const std::string& version, const std::string& kind,
                         const nlohmann::json& plan_json, const std::string& selector, const std::string& who,
                         const std::string& reason);
  std::vector<rollout::HostCandidate> select_hosts(const std::string& service, const std::string& selector);
  ActiveRollout* find_rollout_arg(const nlohmann::json& args);
  // with_hosts false: without the per-host lists ("hosts", "batches"), which at 10,000 hosts
  // cost the loop tens of ms to build and send.
  nlohmann::json rollout_summary(uint64_t id, const std::string& who);
  nlohmann::json rollout_view(const store::RolloutRow& row, const rollout::State& st, bool with_events,
                              int64_t events_after = 0, bool with_hosts = true);

  // ---- timers
  void on_timers();
  // A WAL checkpoint when no rollout is active and the store has been quiet for
  // kCheckpointQuietMs (Store::checkpoint; docs/GUARANTEES.md, 3).
  void checkpoint_at_rest(Millis now);
  Millis poll_timeout_ms();
  void publish();

  Config cfg_;
  Clock& clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  // sha256 -> (path, size) of artifacts being served. A release never changes once uploaded,
  // and every FetchChunk needs these: a store query per chunk cost a prepared statement each.
  std::map<std::string, std::pair<std::string, uint64_t>> served_artifacts_;
  // (service, version) -> release, for the orders of each batch (releases never change once
  // uploaded): a store query per ordering step was ~2% of a 10,000-host rollout.
  std::map<std::pair<std::string, std::string>, store::ReleaseRow> orderable_releases_;
  // Bytes of Chunk frames handed to ZeroMQ and not yet written to a socket (the I/O thread
  // subtracts a frame when it frees it). Above kChunkQueueBudget new FetchChunks wait in
  // deferred_fetches_, so the coordinator's memory stays flat however many agents download
  // at once (without it: agents x window x chunk, 2 MiB per downloading agent).
  static constexpr int64_t kChunkQueueBudget = 32 << 20;
  static constexpr size_t kMaxDeferredPerHost = 64;  // 8x an agent's window; more are dropped
  std::shared_ptr<std::atomic<int64_t>> chunk_bytes_queued_ = std::make_shared<std::atomic<int64_t>>(0);
  std::deque<std::pair<std::string, proto::FetchChunk>> deferred_fetches_;
  std::map<std::string, size_t> deferred_per_host_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> agents_, pub_, operators_, zap_, mon_agents_, mon_operators_;
  std::unique_ptr<KeyRing> keys_;
  std::map<std::string, Millis> refused_logged_;  // key -> when last logged (monotonic)
  std::map<std::string, uint64_t> handshake_failures_;  // socket:event -> count
  std::map<std::string, std::string> endpoints_;
  fleet::Registry registry_;
  std::unique_ptr<transport::udp_hb::Receiver> udp_;  // null: UDP heartbeats off
  static constexpr int kMaxDatagramsPerPass = 20000;
  std::map<uint64_t, ActiveRollout> active_;
  // Per service, the state of its newest rollout once it ended (nullptr: none), for hosts that
  // come back afterwards; loaded from the store at most once per service per process.
  std::map<std::string, std::shared_ptr<const rollout::State>> ended_;
  std::map<std::string, OpenOrder> orders_;  // open (unreported) orders by id
  uint64_t epoch_ = 0;
  // An agent event read in this pass for a rollout: a report (with the row that records it and
  // its log line) or a host back (a hello; no row). Applied in arrival order, one step and one
  // transaction per rollout per pass (flush_pending): a reconnect storm during a rollout is one
  // step per pass, not one durable step per hello.
  struct PendingReport {
    uint64_t rollout_id;
    rollout::Event event;
    std::optional<store::ResultRow> row;
    std::string log_line;
  };
  std::vector<PendingReport> pending_reports_;   // read, not yet persisted nor applied
  std::set<std::string> pending_report_ids_;     // their order ids (a resent report is not applied twice)
  std::vector<std::string> pending_acks_;        // acked in memory, persisted once per interval if still open
  std::map<std::string, store::HostRow> pending_hosts_;  // hellos to persist
  std::unordered_map<std::string, Millis> hello_asked_;  // connection -> when we last sent it hello_required
  // The operator command being handled (handle_op): its audit row, and the events it asks to
  // record, ride in the first rollout step it causes (apply_many), so they are durable with
  // that decision in its commit instead of costing one fsync after it. `written` once they did.
  struct OpRecord {
    store::AuditRow audit;
    std::vector<store::EventRow> events;
    bool written = false;
  };
  std::optional<OpRecord> op_record_;
  // checkpoint_at_rest: the store's WAL backlog last seen and since when it has not changed
  // (-1: a rollout was active, the quiet period starts over).
  int64_t ckpt_backlog_seen_ = -1;
  Millis ckpt_quiet_since_ = 0;
  static constexpr Millis kCheckpointQuietMs = 10000;
  Millis next_heartbeat_ = 0;
  Millis started_ = 0;
  std::unique_ptr<Metrics> metrics_;
  mutable std::mutex pub_mu_;
  std::atomic<uint64_t> loop_turns_{0};
  Published published_;
  bool dirty_ = true;
  Millis last_publish_ = -1000000;
  Millis last_publish_cost_ = 0;  // ms the last snapshot took to build
  // The snapshot costs ~100 ms at 10,000 hosts: with only heartbeats arriving it is rebuilt on
  // a timer only while someone reads it over HTTP (a request in the last kWatchedMs), and on
  // demand when a request finds it stale; events (dirty_) still rebuild it at once.
  std::atomic<Millis> http_read_at_{-1000000};
  std::atomic<bool> refresh_wanted_{false};
  std::condition_variable pub_cv_;
  Millis published_at_ = -1000000;  // under pub_mu_
  uint64_t published_seq_ = 0;      // under pub_mu_: snapshots built so far
  static constexpr Millis kWatchedMs = 60000;
  // Interrupt coalescing at rest: after a pass over the agent socket that held only heartbeats,
  // the socket is read again at most kRestBatchMs later, so 10,000 heartbeats a second wake the
  // loop ~100 times instead of thousands. Any other message ends it at the next pass; operator
  // requests are never held.
  static constexpr Millis kRestBatchMs = 10;
  bool agents_at_rest_ = false;
  bool agent_events_in_pass_ = false;
  Millis last_agent_drain_ = 0;
  Millis next_expiry_ = 0;
  static constexpr Millis kStatusRefreshMs = 5000;  // snapshot age limit when only heartbeats arrive
  std::unique_ptr<HttpServer> http_;
};

}  // namespace gantry::coordinator
