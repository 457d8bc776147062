// The embedded store: SQLite (WAL, synchronous=FULL) in one file in the coordinator's state
// directory. The default (--store sqlite): one coordinator, restarted on the same disk.
#pragma once

#include <memory>
#include <string>

#include "coordinator/store/store.h"

namespace gantry::store {

class Db;

class SqliteStore final : public Store {
 public:
  // Opens (creating if needed) the database at `path` and migrates it to the current schema.
  // SQLite's automatic WAL checkpoint is off; the WAL is checkpointed at commit only once it
  // holds `wal_cap_pages` pages (kWalCapPages; tests pass a small one).
  static Expected<std::unique_ptr<SqliteStore>> open(const std::string& path, int64_t wal_cap_pages = kWalCapPages);
  ~SqliteStore() override;

  // WAL pages not yet checkpointed (0: nothing to do). See Db::wal_backlog.
  // checkpoint(): the WAL is copied into the database and restarted with one small lazy write,
  // three fsyncs in all, so that no rollout pays them.
  int64_t wal_backlog() const override;
  Status checkpoint() override;
  uint64_t checkpoints() const override;
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

 private:
  explicit SqliteStore(Db* db);
  std::unique_ptr<Db> db_;
};

}  // namespace gantry::store
