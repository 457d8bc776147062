// The persist-then-act interpreter of the rollout state machine: it feeds events to
// rollout::step, writes each step (state, orders, events, reports, audit) to the store in one
// transaction, and only then carries the step's actions out through OrderSink and SignalSink.
// It never reads a clock of its own and opens no socket, so a unit test drives it with a store
// on a temp file, fake sinks and a FakeClock. Decisions run on a DecisionClock over that clock
// (monotonic); records (events, audit, timelines) carry wall time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/protocol/messages.h"
#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/rollout/state_machine.h"
#include "coordinator/server/change_flag.h"
#include "coordinator/server/decision_clock.h"
#include "coordinator/server/host_timeline.h"
#include "coordinator/server/metrics.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

// Where orders go: one agent, over its own acknowledged connection.
class OrderSink {
 public:
  virtual ~OrderSink() = default;
  // Hands `order` to `host_id`'s greeted connection; false when it has none now (the order
  // stays open and goes out again when the host says hello or at the next resend).
  virtual bool send_order(const std::string& host_id, const proto::Order& order) = 0;
};

// Where fleet-wide signals go: the broadcast fast path (losing one must never matter).
class SignalSink {
 public:
  virtual ~SignalSink() = default;
  // Broadcasts `kind` for rollout `rollout_id` of `service`.
  virtual Status broadcast(rollout::SignalKind kind, uint64_t rollout_id, const std::string& service) = 0;
};

class RolloutExecutor {
 public:
  struct ActiveRollout {
    store::RolloutRow row;  // meta (its state column is not kept up to date here)
    rollout::State state;
    // rollout::next_deadline(state), kept with the state: the loop asks for it every turn and
    // it scans every host.
    Millis deadline = 0;
    HostTimelines timeline;  // its hosts' timelines: what is stored and what is queued for the store
  };
  struct OpenOrder {
    store::OrderRow row;
    std::optional<proto::Order> wire;  // row.body as sent; empty if the stored body is corrupt
    Millis last_sent = 0;              // monotonic; 0 = never sent in this process
  };
  // What an operator command asks to have recorded: its audit row and event lines ride in the
  // first rollout step the command causes, durable with that decision in its commit.
  struct CommandRecord {
    store::AuditRow audit;
    std::vector<store::EventRow> events;
    bool written = false;  // a step carried them
  };
  // What rollout.start / rollback ask for; `hosts` were selected by the caller.
  struct StartRequest {
    std::string service, version, kind = "rollout";  // kind: "rollout" | "rollback"
    nlohmann::json plan = nlohmann::json::object();
    std::vector<rollout::HostCandidate> hosts;
    std::string selector;  // for the error message only
    std::string who, reason;
  };

  RolloutExecutor(store::Store& store, const Clock& clock, OrderSink& orders, SignalSink& signals, Metrics& metrics,
                  ChangeFlag& changed);

  // Active rollouts and their open orders, exactly as last persisted; a rollout that never saved
  // its first step is marked failed (nothing was ordered).
  [[nodiscard]] Status restore();

  // A new rollout: checked (no other active rollout of the service, a valid plan, a known release,
  // hosts to order), created and stepped with its start event. Errors name what is wrong.
  [[nodiscard]] Expected<uint64_t> start(StartRequest req);
  // Steps rollout `id` with one event; `result` (a report this event applies) is persisted with it.
  [[nodiscard]] Status apply(uint64_t id, const rollout::Event& ev, const store::ResultRow* result = nullptr);
  // Several events in order, persisted as one step; `results` are the reports they apply.
  // errors (optional) gets one status per event. `agent_reports`: the events are agents'
  // reports, which may be committed without an fsync when nothing is acted on (StepWrite::durable).
  [[nodiscard]] Status apply_many(uint64_t id, const std::vector<rollout::Event>& evs,
                                  std::vector<store::ResultRow> results, std::vector<Status>* errors = nullptr,
                                  bool agent_reports = false);

  // ---- agent events, group-committed: queued while a pass over the agent socket reads them,
  // then persisted together (one step and one transaction per rollout) by flush_reports.
  // A report of an open order of `host_id`; false if the order is not open (information only).
  bool queue_report(const std::string& host_id, const proto::Report& r);
  // A Progress of an open order of `host_id`: a timeline entry of its rollout, written with the
  // next flush_reports (with the rollout's step if the pass makes one, else lazily). Ignored
  // when the order is not open or not the host's, or the host's timeline is full.
  void progress(const std::string& host_id, const proto::Progress& p);
  // A host said hello: every active rollout it belongs to hears it is back (with what it runs),
  // and every open order for it is sent again (the agent answers a repeat with its result).
  void host_back(const proto::Hello& h, bool was_offline);
  // Persists and applies what was queued. Failures are logged; the orders stay open and the
  // agents' resends bring the reports again.
  void flush_reports();
  bool reports_pending() const { return !pending_reports_.empty(); }
  // An order acknowledged by its host (persisted by flush_acks if still open then).
  void ack(const std::string& host_id, const std::string& order_id);
  [[nodiscard]] Status flush_acks();
  // Resends every unacknowledged order last sent `resend_ms` ago or more (or never).
  void resend_unacked(Millis resend_ms);
  // Hosts lost (silent past the timeout, or their key revoked): one step per rollout.
  [[nodiscard]] Status hosts_lost(const std::vector<std::string>& host_ids);
  // EvTick to every rollout whose deadline had passed `unread_ms` ago: the agents' input of the
  // last `unread_ms` is not read yet (the loop stalled, heard_through.h), and a report waiting
  // there may be the one a deadline waits for; those deadlines wait for the next turn's reads.
  [[nodiscard]] Status tick(Millis unread_ms = 0);
  // The earliest rollout deadline (decision time, see DecisionClock), 0 for none.
  Millis next_deadline() const;
  // Decision time now: what the rollout steps and their deadlines are measured in.
  Millis decision_now() const { return decisions_.now(); }

  // ---- the operator command being handled (OperatorApi)
  void begin_command(store::AuditRow audit);
  // An event line for the command's record; written with its first step (or by end_command's caller).
  void add_command_event(store::EventRow e);
  bool command_open() const { return command_.has_value(); }
  CommandRecord end_command();

  // ---- views
  const std::map<uint64_t, ActiveRollout>& active() const { return active_; }
  const ActiveRollout* find(uint64_t id) const;
  // Whether a rollout of `service` is active (a second one is refused).
  bool busy(const std::string& service) const;
  // The state of `service`'s newest rollout if it ended in this process (or was loaded since).
  const rollout::State* ended(const std::string& service) const;
  size_t open_orders() const { return orders_.size(); }
  // The service of the open order `order_id` sent to `host_id`; empty if there is none.
  std::string open_order_service(const std::string& order_id, const std::string& host_id) const;
  bool idle() const { return active_.empty() && orders_.empty(); }
  // Desired state per service, as stored (changed by the steps that end rollouts).
  const std::map<std::string, store::DesiredRow>& desired() const { return desired_; }

 private:
  struct PendingReport {
    uint64_t rollout_id;
    rollout::Event event;
    std::optional<store::ResultRow> row;
    std::string log_line;
  };
  void send(OpenOrder& o);
  // Whether `o` may go (out again) now: not an update order of a stopped rollout that its host
  // has not acknowledged (see rollout::step's withdrawal rules).
  bool may_send(const OpenOrder& o) const;
  // flush_reports' first part: the queued reports and hosts back, one step per rollout.
  void apply_reports();
  // After a step could not be saved: the rollout's state back as last saved (or exit).
  void restore_saved_state(ActiveRollout& a);
  // Appends an entry to `host_id`'s timeline in rollout `a` (dropped when full) and queues its row.
  void add_timeline(ActiveRollout& a, const std::string& host_id, const char* phase, Millis at_ms, Millis received_ms);
  // Records in an ended rollout's log what a host that was still out when it ended runs now.
  void note_back_after_end(const proto::Hello& h);

  store::Store& store_;
  const Clock& clock_;
  DecisionClock decisions_;  // the rollout steps' `now`: monotonic, resumed across restarts
  OrderSink& order_sink_;
  SignalSink& signal_sink_;
  Metrics& metrics_;
  ChangeFlag& changed_;
  std::map<uint64_t, ActiveRollout> active_;
  // Per service, the state of its newest rollout once it ended (nullptr: none), for hosts that
  // come back afterwards; loaded from the store at most once per service per process.
  std::map<std::string, std::shared_ptr<const rollout::State>> ended_;
  std::map<std::string, OpenOrder> orders_;           // open (unreported) orders by id
  std::map<std::string, store::DesiredRow> desired_;  // by service
  // (service, version) -> release, for the orders of each batch (releases never change once
  // uploaded): no store query per ordering step.
  std::map<std::pair<std::string, std::string>, store::ReleaseRow> orderable_releases_;
  // An agent event read in this pass for a rollout: a report (with the row that records it and
  // its log line) or a host back (a hello; no row). Applied in arrival order, one step and one
  // transaction per rollout per pass: a reconnect storm during a rollout is one step per pass,
  // not one durable step per hello.
  std::vector<PendingReport> pending_reports_;
  std::set<std::string> pending_report_ids_;  // their order ids (a resent report is not applied twice)
  std::vector<std::string> pending_acks_;     // acked in memory, persisted by flush_acks if still open
  // Timeline rows not written yet, by rollout: carried by that rollout's next step, or written
  // lazily at the end of the pass (flush_reports).
  std::map<uint64_t, std::vector<store::TimelineRow>> pending_timeline_;
  std::optional<CommandRecord> command_;
};

// The stored body of an order (the JSON object order_from_json reads) and back.
std::string order_body(const proto::Order& o);
Expected<proto::Order> order_from_json(const std::string& body);

}  // namespace gantry::coordinator
