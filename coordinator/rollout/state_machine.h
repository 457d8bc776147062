// The rollout decisions as a pure state machine: (state, event, now) -> (state, actions).
//
// It opens no socket, reads no clock, sleeps never. The coordinator's daemon persists the
// new state and the actions in one SQLite transaction, then carries the actions out.
// Deadlines live in the state as absolute monotonic-clock milliseconds... except that a
// restarted coordinator has a new monotonic origin, so the daemon feeds `now` from the wall
// clock (ms since epoch); the machine does not care which, only that it only moves forward.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/rollout/analysis.h"
#include "coordinator/rollout/plan.h"

namespace gantry::rollout {

enum class Phase {
  kRunning,      // ordering batches
  kPaused,       // operator pause, or waiting for promote after a pause_after batch
  kRollingBack,  // ordering changed hosts back to their previous release
  kSucceeded,    // every host healthy on the target
  kFailed,       // budget spent (or progress deadline passed) and auto_rollback off
  kRolledBack,   // rollback finished
  kAborted,      // operator abort: ordering stopped, hosts left as they were
};
const char* phase_name(Phase p);
bool is_terminal(Phase p);

enum class HostState {
  kPending,         // not ordered yet
  kOrdered,         // update ordered, no result yet
  kHealthy,         // reported success on the target version
  kFailed,          // reported failure (the agent reverted locally, or could not)
  kUnknown,         // ordered, then lost contact (or timed out) before a result
  kRollingBack,     // rollback ordered
  kRolledBack,      // rollback reported success
  kRollbackFailed,  // rollback reported failure
  kSkipped,         // never ordered because the rollout stopped
};
const char* host_state_name(HostState s);

struct HostSlot {
  std::string host_id;
  std::string domain;        // value of plan.domain_label on this host ("" if none)
  std::string from_version;  // what it ran when the rollout started ("" if nothing)
  HostState state = HostState::kPending;
  int batch = -1;  // index of the batch it belongs to
  // (online and unknown_counts sit next to state and batch: the machine's counting pass over
  // every host reads only these four, close together.)
  bool online = true;
  // Added: whether this kUnknown host counts against the failure budget now (unknown_hosts
  // "fail", a host timeout, or "wait" whose unknown_wait_ms has passed).
  bool unknown_counts = false;
  std::string order_id;  // last order sent to it
  Millis ordered_at = 0;
  Millis lost_at = 0;       // when it became unknown
  uint64_t update_seq = 0;  // order in which hosts were updated (for reverse-order rollback)
  std::string message;      // last report's message
  // Added: what the host last said it runs (start, reports, reconnects); "" if never known.
  std::string running_version;

  bool operator==(const HostSlot&) const = default;
  nlohmann::json to_json() const;
  // The same as to_json().dump(), written straight into a string (one per changed slot per step).
  std::string to_json_text() const;
  static Expected<HostSlot> from_json(const nlohmann::json& j);
};

// host id -> position in State::hosts. A cache, not part of the state: positions never change
// after the start, copies share it, every hit is checked against the slot it names, and a miss
// or a wrong hit rebuilds it. Never compared and never persisted.
struct HostIndex {
  mutable std::shared_ptr<const std::unordered_map<std::string, uint32_t>> map;
  bool operator==(const HostIndex&) const { return true; }
};

struct State {
  uint64_t id = 0;
  std::string service;
  std::string version;   // target
  std::string selector;  // the hosts it was asked for (the desired state's, once it ends)
  Plan plan;
  Phase phase = Phase::kRunning;
  bool waiting_promote = false;                   // paused by pause_after rather than by the operator
  std::vector<std::vector<std::string>> batches;  // host ids per batch, fixed at start
  int current_batch = -1;                         // index of the batch being ordered/awaited
  std::vector<HostSlot> hosts;                    // in schedule order
  Millis started_at = 0;
  Millis next_batch_at = 0;  // batch_delay: earliest time the next batch may be ordered
  Millis finished_at = 0;
  uint64_t next_order_seq = 1;
  uint64_t next_update_seq = 1;
  std::string end_reason;  // why it ended (or why it is rolling back)
  // Added: the rollout stopped ordering updates (budget spent, progress deadline, operator
  // rollback); it ends rolled back or failed once nothing is in flight.
  bool halted = false;
  // Added: the last batch whose completion was handled (pause/delay decided); -1 for none.
  int completed_batch = -1;
  // Added: metric analysis (plan.analysis): the open gate after a batch, the last evaluation of
  // each query, and whether an inconclusive one holds the rollout paused (analysis.h).
  AnalysisProgress analysis;

  HostIndex index;  // derived; see HostIndex

  bool operator==(const State&) const = default;

  // O(1) lookups through `index`.
  HostSlot* find(const std::string& host_id);
  const HostSlot* find(const std::string& host_id) const;
  nlohmann::json to_json() const;
  // Everything but `hosts`: the daemon persists this header with each step and the host slots
  // as rows of their own, only those that changed (a 10,000-host state is ~1 MB of JSON).
  nlohmann::json header_json() const;
  // Reads both forms: a whole state, or a header plus its slots (in schedule order).
  static Expected<State> from_json(const nlohmann::json& j);
  static Expected<State> from_json(const nlohmann::json& header, const std::vector<nlohmann::json>& slots);
  // Once a rollout is halted or has ended no host is pending: every pending one was skipped.
  // That step does not write the skipped slots (a rollback of a 10,000-host rollout would write
  // ~10,000 rows before its Signal goes out); from_json derives them from the header instead.
  bool pending_means_skipped() const;
};

// ---- events -----------------------------------------------------------------

struct HostCandidate {
  std::string host_id;
  std::map<std::string, std::string> labels;
  std::string running_version;
  bool online = true;
};

struct EvStart {  // builds the schedule and orders the first batch
  uint64_t id;
  std::string service;
  std::string version;
  Plan plan;
  std::vector<HostCandidate> hosts;  // selected hosts, in a stable order (e.g. by host id)
  std::string selector;              // how they were selected (kept in the state)
};
struct EvReport {
  std::string host_id;
  std::string order_id;
  Outcome outcome = Outcome::kFailed;
  std::string running_version;
  std::string message;
};
struct EvHostLost {
  std::string host_id;
};
struct EvHostBack {
  std::string host_id;
  std::string running_version;
  // The order the host says it is working on for this service ("" when idle), from its hello.
  std::string order_in_progress;
};
struct EvTick {};  // time passed: check deadlines and batch delays
struct EvPause {};
struct EvResume {};
struct EvPromote {};
struct EvAbort {};
struct EvRollback {};  // operator asks to roll back the changed hosts now
struct EvAnalysis {    // an evaluation of one of plan.analysis's queries, taken by the coordinator
  Measurement m;
};

using Event = std::variant<EvStart, EvReport, EvHostLost, EvHostBack, EvTick, EvPause, EvResume, EvPromote, EvAbort,
                           EvRollback, EvAnalysis>;

// ---- actions ----------------------------------------------------------------

struct ActOrder {  // send this order to this host over its acknowledged channel
  std::string host_id;
  std::string order_id;  // unique: "r<rollout>-<seq>"
  OrderKind kind = OrderKind::kUpdate;
  std::string version;
};
struct ActBroadcast {
  SignalKind kind;
};  // on the PUB fast path
struct ActRecord {
  std::string message;
};  // a line for the rollout's event log
struct ActFinished {
  Phase phase;
};  // the rollout reached a terminal phase

using Action = std::variant<ActOrder, ActBroadcast, ActRecord, ActFinished>;

struct StepResult {
  State state;
  std::vector<Action> actions;
  Status error;  // an event that makes no sense now (e.g. promote while running) -> error, state unchanged
  // Positions in state.hosts of every slot the step may have changed (ascending, no duplicates);
  // all of them when the step replaced the host list (start). The daemon persists only these.
  std::vector<uint32_t> touched;
  // next_deadline(state), found from the hosts that have a deadline rather than a pass over all.
  Millis deadline = 0;
};

// The whole decision logic. Pure: same inputs, same outputs.
StepResult step(const State& s, const Event& e, Millis now);

// Several events in order, with the same result as chaining step() over them. The state is taken
// by value: the daemon moves its live state in and gets the new one back without a copy (a
// 10,000-host state costs a millisecond to copy), going back to the stored state if it cannot
// persist the result. errors[i] is event i's error; a failed event leaves the state as it was
// before it.
StepResult step_all(State s, const std::vector<Event>& events, Millis now, std::vector<Status>* errors);

// Tests turn this on: after every step the machine checks what it keeps incrementally (its
// counts of in-flight and failed hosts, the list of touched slots, the deadline) against a fresh pass over
// every host, and aborts on a mismatch. Off in the daemon (it costs a pass per event).
void set_self_check(bool on);

// The earliest absolute time at which an EvTick would change something (or 0 for none);
// the daemon uses it as its poll timeout.
Millis next_deadline(const State& s);

// Counts for status and metrics.
struct Counts {
  uint32_t pending = 0, ordered = 0, healthy = 0, failed = 0, unknown = 0, rolling_back = 0, rolled_back = 0,
           rollback_failed = 0, skipped = 0;
};
Counts count(const State& s);

}  // namespace gantry::rollout
