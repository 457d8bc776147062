// The coordinator's durable record: what every store keeps and the interface the coordinator
// writes it through. Everything the coordinator decides is written here before it is acted on.
// Two implementations: SqliteStore (coordinator/store/sqlite_store.h, embedded, the default)
// and EtcdStore (coordinator/store/etcd_store.h, shared by standby coordinators).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::store {

struct HostRow {
  std::string host_id;
  nlohmann::json labels = nlohmann::json::object();
  nlohmann::json services = nlohmann::json::array();  // [{name,current_version,previous_version}]
  Millis first_seen = 0;
  Millis last_seen = 0;
};

struct ReleaseRow {
  std::string service;
  std::string version;
  std::string sha256;
  uint64_t size = 0;
  std::string path;  // artifact file in the coordinator's artifact dir
  Millis created_at = 0;
  std::string manifest;   // signed release manifest, byte for byte ("" when unsigned)
  std::string signature;  // its ed25519 signature, hex
};

// An agent's CURVE public key and what the operators decided about it.
struct AgentKeyRow {
  std::string key;      // Z85 public key
  std::string host_id;  // the host this key speaks for ("" while pending and not yet named)
  std::string state;    // "pending" | "accepted" | "rejected" | "revoked"
  Millis first_seen = 0;
  Millis updated_at = 0;
  std::string updated_by;
};

// An operator's CURVE public key, its name (shown in the audit log) and role.
struct OperatorKeyRow {
  std::string key;  // Z85 public key
  std::string name;
  std::string role;   // "viewer" | "deployer" | "admin"
  std::string state;  // "active" | "revoked"
  Millis created_at = 0;
  std::string updated_by;
};

struct RolloutRow {
  uint64_t id = 0;
  std::string service;
  std::string version;
  std::string kind = "rollout";  // "rollout" | "rollback"
  std::string phase;
  std::string created_by;
  std::string reason;
  Millis created_at = 0;
  Millis finished_at = 0;
  int64_t revision = 0;  // >0 once it succeeded: the service's revision number
  // rollout::State as JSON, whole (with "hosts"). Stored as a header in `rollouts` plus one row
  // per host slot in `rollout_hosts`; the reads put the two back together.
  nlohmann::json state;
};

struct OrderRow {
  std::string order_id;
  uint64_t rollout_id = 0;
  std::string host_id;
  std::string body;  // the proto::Order fields, as JSON text (written as is, parsed by the reader)
  bool acked = false;
  bool reported = false;
  Millis created_at = 0;
};

struct ResultRow {
  uint64_t rollout_id = 0;
  std::string host_id;
  std::string order_id;
  std::string outcome;
  std::string running_version;
  std::string message;
  nlohmann::json timings = nlohmann::json::object();
  Millis at = 0;
};

struct EventRow {
  int64_t id = 0;
  uint64_t rollout_id = 0;
  Millis at = 0;
  std::string message;
};

struct AuditRow {
  int64_t id = 0;
  Millis at = 0;
  std::string who;
  std::string command;
  std::string target;
  std::string decision;
};

// One entry of a host's timeline in a rollout: a phase its agent reported (Progress) or the
// result of one of its orders ("healthy" | "failed"). Read by `gantry rollout show`.
struct TimelineRow {
  uint64_t rollout_id = 0;
  std::string host_id;
  uint32_t seq = 0;  // its place in the host's timeline in this rollout: 0, 1, ...
  std::string phase;
  Millis at_ms = 0;        // when it began by the agent's clock; the receive time when the agent gave none
  Millis received_ms = 0;  // when the coordinator received it (its own clock)
};

// What a service should run, and on which hosts: set by the rollout (or rollback) that last
// succeeded or rolled back, and kept by the coordinator's convergence (docs/GUARANTEES.md, 5).
struct DesiredRow {
  std::string service;
  std::string version;
  std::string selector;                            // the hosts it applies to ("" = every host with the service)
  std::string converge = "auto";                   // "auto": drift is repaired; "report": drift is only reported
  nlohmann::json plan = nlohmann::json::object();  // the plan repairs reuse (verification, timeouts)
  uint64_t rollout_id = 0;                         // the rollout that set it
  // true after a rollout of the service failed or was aborted: the fleet is left as it is and
  // drift is reported, not repaired, until the next rollout or rollback of the service ends.
  bool held = false;
  std::string note;  // why it is what it is ("rollout 7 succeeded", ...)
  Millis updated_at = 0;
};

// One rollout step's effects, committed atomically.
struct StepWrite {
  uint64_t rollout_id = 0;
  std::string phase;
  nlohmann::json state;  // rollout::State::header_json(): everything but the host slots
  // The host slots this step changed: (position in the schedule, slot JSON text, as
  // HostSlot::to_json_text() writes it). Unchanged slots are not rewritten: a step costs
  // O(changed hosts), not O(hosts).
  std::vector<std::pair<uint32_t, std::string>> slots;
  Millis finished_at = 0;
  bool assign_revision = false;  // the rollout just succeeded
  std::vector<OrderRow> new_orders;
  std::vector<EventRow> events;
  // Reports this step applies: recorded (and their orders closed) in the same transaction, so a
  // crash never leaves a report recorded but not applied (the order would never be re-sent).
  std::vector<ResultRow> results;
  // Orders acknowledged since the last write, riding along (an ack alone is not worth an
  // fsync: a lost ack only means one more resend, which agents answer as a duplicate).
  std::vector<std::string> acked;
  // The audit row of the operator command that caused this step (Coordinator::handle_op):
  // durable with the decision it records, in the same commit instead of one fsync after it.
  std::vector<AuditRow> audit;
  // Timeline entries of the rollout's hosts received since the last write, riding along (the
  // results of the reports in `results` among them, durable with those).
  std::vector<TimelineRow> timeline;
  // The service's desired state, changed by this step (the rollout ended): durable with the end.
  std::optional<DesiredRow> desired;
  // false: a step nothing is acted on from (no order, broadcast or end), committed without its
  // own fsync (SQLite: Sync::kLazy; etcd: held in memory and written with the rollout's next
  // durable step, or by Store::flush). Losing it to a power cut (or a leader's death) loses only
  // reports, and their orders are then still open: they are resent and the agents answer with
  // the stored report. The next durable step makes it durable too. So a batch transition costs
  // one fsync (one etcd transaction).
  bool durable = true;
};

// WAL checkpoints (docs/GUARANTEES.md, 3). SQLite's automatic checkpoint is off: it ran every
// N pages, i.e. in the middle of rollouts, and cost two fsyncs plus one more for the header of
// the restarted WAL at the next commit. The coordinator checkpoints at rest instead
// (Store::checkpoint, from its timer when no rollout is active), and the WAL is checkpointed at
// commit anyway once it holds this many pages, so it cannot grow without bound during a very
// long rollout: 65,536 pages, 256 MiB at SQLite's default 4 KiB page. A 10,000-host rollout
// writes ~8,000 pages (~30 MB).
inline constexpr int64_t kWalCapPages = 65536;

class Store {
 public:
  // The default store: SqliteStore::open (coordinator/store/sqlite_store.h).
  static Expected<std::unique_ptr<Store>> open(const std::string& path, int64_t wal_cap_pages = kWalCapPages);
  virtual ~Store() = default;

  // Whether `e`, an error of this store, says the store could not be reached (a shared store out
  // of reach: quorum lost, or this process cut off from it), a temporary condition, rather than
  // a store that answered and refused or holds what cannot be read. An embedded store is never
  // out of reach.
  virtual bool out_of_reach(const Error& /*e*/) const { return false; }

  // Work the store defers to a quiet moment (SQLite: WAL pages not yet checkpointed; 0:
  // nothing to do, always 0 for a store that defers nothing).
  virtual int64_t wal_backlog() const = 0;
  // That deferred work, for when nothing waits on the store (the coordinator calls it at rest,
  // no rollout active). Nothing when wal_backlog() is 0.
  virtual Status checkpoint() = 0;
  virtual uint64_t checkpoints() const = 0;  // checkpoints run by this process (at rest and at the cap)
  // Writes what the store holds back (EtcdStore: lazy steps not yet written with a durable one;
  // SQLite: nothing, its lazy commits are written already). The coordinator calls it once per
  // heartbeat interval and when it stops. An Error when the write failed (what was held back is
  // kept and tried again, unless the store was deposed).
  virtual Status flush() { return Status::Ok(); }

  // The fencing epoch of the coordinator that opened the store: higher than any before it.
  // SQLite: a start counter, incremented on every call. etcd: the revision at which this
  // coordinator's leadership key was created (docs/HIGH_AVAILABILITY.md).
  virtual Expected<uint64_t> bump_epoch() = 0;

  virtual Status put_host(const HostRow& h) = 0;
  // Many hosts in one transaction (a reconnect storm is one fsync per batch, not per host).
  virtual Status put_hosts(const std::vector<HostRow>& hs) = 0;
  virtual Expected<std::vector<HostRow>> hosts() = 0;

  virtual Status put_release(const ReleaseRow& r) = 0;
  virtual Expected<std::optional<ReleaseRow>> release(const std::string& service, const std::string& version) = 0;
  virtual Expected<std::optional<ReleaseRow>> release_by_sha(const std::string& sha256) = 0;
  // Every release, oldest first (a standby's prefetch pass lists them: peer_prefetch.h).
  virtual Expected<std::vector<ReleaseRow>> releases() = 0;

  virtual Expected<uint64_t> create_rollout(const RolloutRow& r) = 0;
  virtual Status save_step(const StepWrite& w) = 0;
  virtual Expected<std::optional<RolloutRow>> rollout(uint64_t id) = 0;
  // Newest first; `service` empty = all services. Without `with_hosts` the states are headers
  // only (no "hosts"): enough for history, and cheap at 10,000 hosts per rollout.
  virtual Expected<std::vector<RolloutRow>> rollouts(const std::string& service, bool active_only, int limit,
                                                     bool with_hosts = true) = 0;
  // The newest rollout of each service among the `window` most recent ones, newest first.
  virtual Expected<std::vector<RolloutRow>> latest_rollouts(const std::string& service, int window,
                                                            bool with_hosts = true) = 0;

  virtual Expected<std::vector<OrderRow>> open_orders() = 0;
  virtual Status mark_acked(const std::string& order_id) = 0;
  virtual Status mark_acked(const std::vector<std::string>& order_ids) = 0;  // one transaction
  // Closes every open order of a rollout that ended, so none is resent later.
  virtual Status close_orders(uint64_t rollout_id) = 0;
  // Stores a host's report with its order and marks the order reported.
  virtual Status record_report(const ResultRow& r) = 0;
  // The reports of a rollout's orders, in the order they were recorded (by `at`).
  virtual Expected<std::vector<ResultRow>> results(uint64_t rollout_id) = 0;

  // Timeline entries in one transaction, which may be lazy (SQLite: Sync::kLazy): they inform,
  // nothing is decided from them, and the next durable commit makes them durable. A row with an existing (rollout,
  // host, seq) replaces it.
  virtual Status add_timeline(const std::vector<TimelineRow>& rows) = 0;
  // A rollout's timeline entries, by host, then seq.
  virtual Expected<std::vector<TimelineRow>> timeline(uint64_t rollout_id) = 0;

  virtual Expected<std::vector<EventRow>> events(uint64_t rollout_id, int64_t after_id, int limit) = 0;
  // The newest `limit` events of a rollout, oldest first (for status views).
  virtual Expected<std::vector<EventRow>> recent_events(uint64_t rollout_id, int limit) = 0;
  virtual Status add_event(const EventRow& e) = 0;

  // Desired state per service (SQLite: coordinator/store/sqlite_desired.cc).
  virtual Expected<std::vector<DesiredRow>> desired() = 0;
  virtual Status put_desired(const DesiredRow& d) = 0;

  virtual Status audit(const AuditRow& a) = 0;
  virtual Expected<std::vector<AuditRow>> audit_log(int limit) = 0;

  // Key allowlists (enrollment). Each call upserts all rows in one transaction.
  virtual Status put_agent_keys(const std::vector<AgentKeyRow>& rows) = 0;
  virtual Expected<std::vector<AgentKeyRow>> agent_keys() = 0;
  virtual Status put_operator_keys(const std::vector<OperatorKeyRow>& rows) = 0;
  virtual Expected<std::vector<OperatorKeyRow>> operator_keys() = 0;
};

}  // namespace gantry::store
