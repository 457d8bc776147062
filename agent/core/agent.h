// The agent's order engine: accepts, de-duplicates and queues orders, executes one at a
// time through the phases fetching -> staging -> swapping -> restarting -> verifying
// (-> reverting), journals every transition first, and recovers an interrupted order
// after a restart. A service with traffic steps (agent/traffic/lifecycle.h) is drained before
// its swap and allowed traffic only once verified. It owns no socket: messages go out through `Send`, come in via
// handle(). Main thread only; blocking steps run on its Worker.
// Its member functions live in the files of agent/core/ named for their jobs (agent.cc lists them).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/config/agent_config.h"
#include "agent/core/release_signatures.h"
#include "agent/core/service_runtime.h"
#include "agent/core/stopped_rollouts.h"
#include "agent/core/verifier.h"
#include "agent/core/worker.h"
#include "agent/driver/driver.h"
#include "agent/fetch/fetcher.h"
#include "agent/probe/probe.h"
#include "agent/state/state_store.h"
#include "agent/traffic/lifecycle.h"
#include "common/protocol/messages.h"
#include "common/release/manifest.h"
#include "common/util/clock.h"

namespace gantry::agent {

class Agent {
 public:
  using Send = std::function<void(const proto::Message&)>;

  Agent(std::string host_id, std::map<std::string, std::string> labels, std::map<std::string, ServiceRuntime> services,
        StateStore& store, const Clock& clock, Send send, Verifier::Sleep sleep);
  ~Agent();

  // Trusted ed25519 release public keys (raw 32 bytes). When any is set, every order must carry
  // a manifest signed by one of them that matches the order's service, version, digest and size.
  void set_release_keys(std::vector<std::string> keys);
  // Loads the journal, takes what runs from disk, and resumes an interrupted order.
  Status start();
  // Handles an Order, Chunk, ErrorMsg or Signal; other types are ignored.
  void handle(const proto::Message& m);
  // A Chunk decoded without copying its data (proto::decode_chunk); same as handle() of it.
  void handle_chunk(const proto::ChunkView& c);
  // The connection to the coordinator was recreated: re-send outstanding chunk requests.
  void on_reconnect();
  // Moves work forward: worker results, fetch stalls, the next queued order.
  void tick();
  // The latest time tick() must run (monotonic ms).
  Millis next_deadline() const;
  // True while an order is in progress or queued.
  bool working() const;
  // The epoch of a Welcome, Order or Signal (`what` names it in the log) against the highest
  // seen (agent/core/epoch_gate.h): false when it is lower (do not act on the message); a higher
  // one is journaled first. Orders and Signals are checked by handle() itself.
  bool observe_epoch(uint64_t epoch, const std::string& what);
  // The hello describing this host and what each service runs.
  proto::Hello hello() const;
  // Readable when the worker has a result (for the main loop's poll).
  int wake_fd() const { return worker_.wake_fd(); }
  // Blocks until the worker has a result or timeout_ms passed (tests, shutdown).
  bool wait_for_worker(Millis timeout_ms) { return worker_.wait(timeout_ms); }
  // Stops the worker; the journal keeps the phase so the next start resumes.
  void shutdown();

  const AgentState& state() const { return state_; }

 private:
  void on_order(const proto::Order& o);
  void on_chunk(const proto::ChunkView& c);
  void on_error(const proto::ErrorMsg& e);
  void on_signal(const proto::Signal& s);
  void on_work_done(const WorkResult& r);

  void start_next();
  void begin_fetch();
  void after_fetch_checked();
  void begin_stage();
  void begin_swap(bool journaled = false);
  void accept_and_swap(const proto::Order& o, int64_t received_us, int64_t checks_us);
  void reject_unjournaled(const proto::Order& o, const Status& st);
  void acknowledge(const proto::Order& o);
  ServiceRuntime& svc_of(const proto::Order& o);
  void begin_restart();
  // Drains the active order's service (a worker job), then swaps (kSwap) or restarts (kRestart).
  enum class AfterDrain { kSwap, kRestart };
  void begin_drain(AfterDrain next);
  void on_drained(const WorkResult& r);
  void on_step(const WorkResult& r);
  void on_unblocked(const WorkResult& r);
  traffic::StepContext step_context(bool revert) const;
  bool has_traffic_steps() const;
  void on_restarted(const WorkResult& r);
  void announce_verifying();
  void begin_revert(std::string reason);
  void succeed();
  void fail_before_swap(std::string message);
  void fail_after_allow_failed(std::string message);
  // The new release runs, verified, and stays: recorded as current, the order reported failed.
  void fail_keeping_new(const std::string& message);
  // Start-first binary services (agent/core/start_first.h).
  void begin_start_first(bool promoted);
  void on_start_first_done(const WorkResult& r);
  void begin_start_first_revert();
  void on_start_first_reverted(const WorkResult& r);
  void finish(proto::Report r);
  void log_timings(const std::string& order_id);

  Status persist(bool lazy = false);
  bool persist_or_note(bool lazy = false);
  void set_phase(const char* phase, const std::string& detail);
  // Every message to the coordinator goes through send(): while holding_, it is kept in held_
  // (in order) until send_held().
  void send(const proto::Message& m);
  void send_held();
  void prepare_restart();
  // at_wall_ms: when the phase began (0: now).
  void progress(const std::string& phase, const std::string& detail, Millis at_wall_ms = 0);
  void mark_timing(const char* name);
  ServiceRuntime& svc();
  ReleaseId release() const;
  VerifyPolicy policy() const;
  std::string disk_version(const std::string& service);

  std::string host_id_;
  std::map<std::string, std::string> labels_;
  std::map<std::string, ServiceRuntime> services_;
  StateStore& store_;
  const Clock& clock_;
  Send send_;
  Verifier::Sleep sleep_;

  AgentState state_;
  Worker worker_;
  std::unique_ptr<Fetcher> fetcher_;
  Millis order_started_ = 0;
  Millis phase_started_ = 0;

  // Microsecond step timings of the active order for its `order <id> timings:` log line
  // (bench/run footprint reads it). Steady clock, diagnostics only: no decision reads them,
  // and the Report keeps its millisecond timings_ms.
  struct StepTimes {
    int64_t received_us = 0;                       // the Order arrived (for a resumed order: when it resumed)
    int64_t accept_us = 0;                         // arrival -> accepted (journaled + acked)
    int64_t started_us = 0;                        // became the active order
    int64_t last_us = 0;                           // end of the previous phase
    std::map<std::string, int64_t> phase_us;       // fetch, stage, swap, restart, verify, revert
    int64_t activate_us = 0;                       // the symlink swap itself (the rename)
    int64_t swap_sync_us = 0;                      // the fsync making it durable, overlapped with the restart command
    int64_t restart_command_us = 0, probe_us = 0;  // the restart and verify jobs on the worker
    int64_t journal_us = 0;
    int journal_writes = 0;
    int64_t checks_us = 0;  // part of accept: the signature and has_release checks before the first write
    int64_t prepare_us =
        0;  // Driver::prepare_restart (spawning the restart command's shell), before the swapping record
  };
  struct Arrival {
    int64_t received_us = 0, accept_us = 0, journal_us = 0;
  };
  StepTimes times_;
  // Rollouts this agent heard an abort or rollback signal for: their later update orders are
  // refused.
  StoppedRollouts stopped_;
  std::map<std::string, Arrival> arrivals_;  // queued order id -> when it arrived
  int64_t last_persist_us_ = 0;              // duration of the latest journal write
  std::string state_error_;                  // journal write error during the active order
  std::string not_installed_;                // order id whose release on_order found not installed
  bool verify_unjournaled_ = false;          // the verifying record failed: revert once the probes end
  std::string restart_failure_;              // the restart command failed (its milestone); the job ends without probing
  std::string swap_sync_failure_;            // the fsync making the swap durable failed: revert once the job ends
  int64_t restart_started_us_ = 0;           // the restart command was started (PreparedRestart::start)
  int64_t restart_done_us_ = 0;              // its milestone was posted: the probes began
  // The active order's restart, made ready before its swapping record and swap (the restart
  // command's shell starts up meanwhile) and started by begin_restart; dropped unstarted when
  // the order ends before it (the command then never runs).
  std::shared_ptr<PreparedRestart> prepared_;
  // The active order's service is out of traffic (its drain succeeded and nothing has allowed
  // traffic since). In memory only: a restarted agent drains again before it acts (idempotent).
  bool traffic_blocked_ = false;
  AfterDrain after_drain_ = AfterDrain::kSwap;
  std::string unblock_failure_;  // fail_before_swap's message while traffic is being allowed back
  bool sf_reverse_ = false;      // start-first revert: back to the previous release (else: the new one stopped)
  bool holding_ = false;
  std::vector<proto::Message> held_;
  Millis announce_verifying_at_ = 0;  // when to log and send Progress{verifying}; 0: done or none
  ReleaseSignatures signatures_;      // the release keys, and the manifests that verified with them
};

}  // namespace gantry::agent
