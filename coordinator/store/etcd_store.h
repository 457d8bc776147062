// The shared store: everything SqliteStore keeps, in etcd (v3 API, coordinator/etcd), so that
// standby coordinators read what the leader wrote and take over from it
// (docs/HIGH_AVAILABILITY.md). Small keys under one prefix, one per row or per group of rows
// added together (etcd_keys.h, etcd_row_groups.h); each Store call that writes is one etcd
// transaction (save_step included, whatever it holds), except a lazy step (StepWrite::durable
// false), which is held and written with the next one (below).
//
// Fencing: opened with a Fence, every write transaction also requires that the leadership key
// still has the creation revision the leader saw when it won; when it does not, nothing is
// written and the call returns Error{code "deposed"}. Only the fenced leader writes, so the ids
// the store hands out (rollouts, events, audit rows) are counters kept in memory, loaded when
// opened and written in the same transaction that uses them. Every write also carries a
// WriteGuard (etcd_batch.h), so that a write the client sent twice applies once.
//
// Errors: as SqliteStore's (code "store", e.g. a release stored twice, a corrupt record), and
// "deposed" (the fence no longer holds; nothing written), "conflict" (another writer came in
// between; nothing written), "etcd" (etcd not reached in time or refused, e.g. over its limits;
// the write may or may not have been applied, and the store reads its ids again first).
//
// What differs from SqliteStore (no caller depends on it): an order written twice by
// save_step's new_orders replaces the first (SQLite refuses the step); an acknowledgement that
// comes after an order was closed is not recorded (no read shows a closed order's `acked`).
//
// A step costs one etcd round trip: what it changes that this store wrote itself (orders,
// rollout headers) is not read back but kept in memory (etcd_written.h).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "coordinator/etcd/etcd_client.h"
#include "coordinator/store/etcd_batch.h"
#include "coordinator/store/etcd_codec.h"
#include "coordinator/store/etcd_keys.h"
#include "coordinator/store/etcd_row_groups.h"
#include "coordinator/store/etcd_written.h"
#include "coordinator/store/store.h"

namespace gantry::store {

inline constexpr const char* kDefaultEtcdPrefix = "/gantry/";

class EtcdStore final : public Store {
 public:
  // `prefix` must be non-empty; a '/' is appended when it does not end in one. Reads the id
  // counters (an Error when etcd cannot be reached or they are corrupt).
  static Expected<std::unique_ptr<EtcdStore>> open(std::shared_ptr<etcd::Client> client,
                                                   std::string prefix = kDefaultEtcdPrefix,
                                                   std::optional<Fence> fence = std::nullopt);

  // Code "etcd": etcd not reached in time, or refused the call (see the codes above).
  bool out_of_reach(const Error& e) const override { return e.code == "etcd"; }
  // Revisions written (by anyone) since the last checkpoint(), as last seen by this store;
  // checkpoint() compacts etcd's history up to the current revision (docs/HIGH_AVAILABILITY.md,
  // "Compaction"); checkpoints() counts them.
  int64_t wal_backlog() const override;
  Status checkpoint() override;
  // Writes the lazy steps held back (etcd_held_steps.cc).
  Status flush() override;
  uint64_t checkpoints() const override;
  // Fenced: the fence's creation revision (after checking it still holds, else "deposed").
  // Unfenced: a start counter, as SqliteStore.
  Expected<uint64_t> bump_epoch() override;
  Status put_host(const HostRow& h) override;
  Status put_hosts(const std::vector<HostRow>& hs) override;
  Expected<std::vector<HostRow>> hosts() override;
  Status put_release(const ReleaseRow& r) override;
  Expected<std::optional<ReleaseRow>> release(const std::string& service, const std::string& version) override;
  Expected<std::optional<ReleaseRow>> release_by_sha(const std::string& sha256) override;
  Expected<std::vector<ReleaseRow>> releases() override;
  Expected<uint64_t> create_rollout(const RolloutRow& r) override;
  Status save_step(const StepWrite& w) override;
  Expected<std::optional<RolloutRow>> rollout(uint64_t id) override;
  Expected<std::vector<RolloutRow>> rollouts(const std::string& service, bool active_only, int limit,
                                             bool with_hosts) override;
  Expected<std::vector<RolloutRow>> latest_rollouts(const std::string& service, int window, bool with_hosts) override;
  Expected<std::vector<OrderRow>> open_orders() override;
  Status mark_acked(const std::string& order_id) override;
  Status mark_acked(const std::vector<std::string>& order_ids) override;
  Status close_orders(uint64_t rollout_id) override;
  Status record_report(const ResultRow& r) override;
  Expected<std::vector<ResultRow>> results(uint64_t rollout_id) override;
  Status add_timeline(const std::vector<TimelineRow>& rows) override;
  Expected<std::vector<TimelineRow>> timeline(uint64_t rollout_id) override;
  Expected<std::vector<EventRow>> events(uint64_t rollout_id, int64_t after_id, int limit) override;
  Expected<std::vector<EventRow>> recent_events(uint64_t rollout_id, int limit) override;
  Status add_event(const EventRow& e) override;
  Expected<std::vector<DesiredRow>> desired() override;
  Status put_desired(const DesiredRow& d) override;
  Status audit(const AuditRow& a) override;
  Expected<std::vector<AuditRow>> audit_log(int limit) override;
  Status put_agent_keys(const std::vector<AgentKeyRow>& rows) override;
  Expected<std::vector<AgentKeyRow>> agent_keys() override;
  Status put_operator_keys(const std::vector<OperatorKeyRow>& rows) override;
  Expected<std::vector<OperatorKeyRow>> operator_keys() override;

  // For `gantry-coordinator migrate` (coordinator/store/migrate.h): rows written with the ids
  // they have, in transactions of at most `chunk` operations; the counters follow.
  Status import_rollout(const RolloutRow& r);  // r.state whole (with "hosts")
  Status import_events(const std::vector<EventRow>& rows, size_t chunk = 1000);
  Status import_audit(const std::vector<AuditRow>& rows, size_t chunk = 1000);
  Status import_open_orders(const std::vector<OrderRow>& rows, size_t chunk = 1000);
  Status import_results(const std::vector<ResultRow>& rows, size_t chunk = 1000);
  // Whether any key is stored under the prefix besides the election's (leader, members/) and the
  // records of which coordinator holds which artifact (copies/).
  Expected<bool> empty();
  // Deletes every key under the prefix except the election's.
  Status wipe();

  const std::string& prefix() const { return keys_.p; }

 private:
  EtcdStore(std::shared_ptr<etcd::Client> client, std::string prefix, std::optional<Fence> fence);

  // Under mu_.
  Status load_counters();
  // The ids and meta/write's revision are read again after a commit whose outcome is unknown
  // or that lost to another write.
  Status reload();
  // Every write but save_step's starts here: reload(), then the held-back steps are written.
  Status ready_to_write();

  // Lazy steps (StepWrite::durable false) are held back (etcd_held_steps.cc) and written with
  // their rollout's next durable step, by flush() (the coordinator's heartbeat tick), before any
  // other write, and before a read of rollouts, orders, results, timelines or events (so that
  // what the leader reads is what it wrote). Bounded: past kHeldRows rows they are written at
  // once; past kHeldRowsMax (etcd failing), the rollout's are dropped and save_step fails (the
  // caller restores the rollout from the store: the reports are resent and answered again).
  static constexpr size_t kHeldRows = 20000;
  static constexpr size_t kHeldRowsMax = 200000;
  Status hold(const StepWrite& w);
  Status flush_held();
  void flush_held_for_read();
  // After a write of held steps whose outcome was unknown: dropped when meta/write shows it was
  // applied, else held again.
  void settle_unsure();
  // `staged`: what the write changes of what written_ keeps (kept once it committed).
  Expected<int64_t> commit(EtcdBatch& b, const char* what, const WrittenChanges& staged = {});
  // A write of rows that depends on nothing read: lock, ready_to_write, `fill`, commit.
  Status write_rows(const char* what, const std::function<void(EtcdBatch&)>& fill);
  Expected<std::vector<etcd::KeyValue>> scan(const std::string& prefix, int64_t limit = 0, bool descending = false,
                                             bool keys_only = false);
  Expected<std::map<std::string, etcd::KeyValue>> get_many(const std::vector<std::string>& keys);
  Expected<std::optional<etcd::KeyValue>> get_one(const std::string& key);
  Status attach_hosts(RolloutRow& r);
  // The events of these groups (etcd_row_groups.h), appended to `out`.
  static Status append_event_groups(const std::vector<etcd::KeyValue>& kvs, std::vector<EventRow>& out);
  Expected<std::vector<RolloutRow>> headers(const std::vector<uint64_t>& ids);
  Expected<std::vector<RolloutRow>> newest(const std::string& service, int limit);
  // An order by id, with its rollout's id when known (0: looked for among every rollout's).
  struct OrderRef {
    std::string order_id;
    uint64_t rollout_id = 0;
  };
  // Reads from etcd what written_ does not know of these orders (every order of their rollouts,
  // with results and acknowledgement marks: orders are stored in groups) and keeps it there.
  Status learn_orders(const std::vector<OrderRef>& refs, const WrittenChanges& staged);
  // Every order stored for the rollout (`reported` and `acked` as its result and mark say).
  Expected<std::vector<etcd_codec::OrderRecord>> read_orders(uint64_t rollout_id);
  // The rollout's header as last written (written_, else read from etcd); nullopt if none.
  Expected<std::optional<RolloutRow>> header_for(uint64_t id, const WrittenChanges& staged);
  // After learn_orders.
  void apply_result(EtcdRowGroups& groups, const ResultRow& r, WrittenChanges& staged);
  void apply_ack(EtcdBatch& b, const std::string& order_id, WrittenChanges& staged);
  void end_orders(EtcdBatch& b, uint64_t rollout_id, WrittenChanges& staged);
  // One step's writes into `b` (save_step).
  // Events, timeline entries and a first step's slots go to `groups` (put into `b` by the caller).
  Status add_step(EtcdBatch& b, WrittenChanges& staged, EtcdRowGroups& groups, const StepWrite& w);
  void note(int64_t revision);

  const std::shared_ptr<etcd::Client> client_;
  const etcd_keys::Layout keys_;
  const std::optional<Fence> fence_;
  mutable std::mutex mu_;
  etcd_codec::Counters counters_;                    // ids handed out, this transaction's included
  etcd_codec::Counters committed_;                   // as stored
  bool reload_counters_ = false;                     // a commit's outcome is unknown: read them again first
  EtcdWritten written_;                              // what this store wrote and needs again (etcd_written.h)
  std::map<uint64_t, std::vector<StepWrite>> held_;  // lazy steps not yet written, by rollout
  size_t held_rows_ = 0;                             // their slots, results, timeline entries and events
  std::vector<StepWrite> unsure_;                    // held steps whose write's outcome is unknown
  std::string unsure_token_;                         // that write's token
  std::string last_token_;                           // the token of the last write tried
  std::string guard_value_;                          // meta/write's value as last read (load_counters)
  int64_t guard_revision_ = 0;  // mod revision of meta/write after this store's last write (WriteGuard)
  std::string token_prefix_;    // random, per store object: a write's token is this and a count
  uint64_t tokens_ = 0;
  std::atomic<int64_t> seen_revision_{0};
  std::atomic<int64_t> compacted_{0};
  std::atomic<uint64_t> checkpoints_{0};
};

}  // namespace gantry::store
