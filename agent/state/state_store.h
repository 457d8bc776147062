// The agent's journal: what each service runs, the order in progress and its phase,
// the queue, and the results of recent orders. Written before every phase transition
// so that an agent killed at any line can finish or revert deterministically.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/protocol/messages.h"
#include "common/util/expected.h"

namespace gantry::agent {

// Phases of an order, in execution order. The journal names them with these strings.
namespace phase {
inline constexpr const char* kFetching = "fetching";
inline constexpr const char* kStaging = "staging";
inline constexpr const char* kSwapping = "swapping";
inline constexpr const char* kRestarting = "restarting";
inline constexpr const char* kVerifying = "verifying";
inline constexpr const char* kReverting = "reverting";
}  // namespace phase

struct ServiceRecord {
  std::string current;   // last committed version (the truth is the `current` symlink)
  std::string previous;  // release kept for an instant revert; empty when none
};

// The order being executed.
struct ActiveOrder {
  proto::Order order;
  std::string phase;         // one of phase::*
  std::string from_version;  // what `current` pointed at when the order started
  std::string failure;       // why we are reverting (phase == reverting)
  std::string slot;          // start-first: the slot the new release starts in ("" otherwise)
  int64_t started_wall_ms = 0;
  std::map<std::string, uint64_t> timings_ms;
};

struct AgentState {
  // 2: the snapshot carries `seq` and is followed by an append-only journal (FileStateStore).
  // Schema 1 (a lone agent-state.json) is still read.
  static constexpr int kSchema = 2;
  std::map<std::string, ServiceRecord> services;
  std::optional<ActiveOrder> active;
  std::deque<proto::Order> queue;
  std::deque<proto::Report> results;  // oldest first, at most kMaxResults
  // The highest coordinator epoch seen in a Welcome, Order or Signal (0: none; journals written
  // before epochs load as 0). Orders and Signals of a lower epoch are refused (agent/core/epoch_gate.h).
  uint64_t highest_epoch = 0;
  // How many add_result calls this object has seen (not saved): lets a store journal only the
  // results added since its last save.
  uint64_t results_added = 0;

  static constexpr size_t kMaxResults = 256;
  // Remembers a finished order's report, dropping the oldest beyond kMaxResults.
  void add_result(const proto::Report& r);
  // The stored report for an order id, if any.
  const proto::Report* find_result(const std::string& order_id) const;
};

// JSON form of the journal (schema-versioned). Parsing validates every name and digest.
std::string serialize_state(const AgentState& s);
Expected<AgentState> parse_state(const std::string& text);

class StateStore {
 public:
  virtual ~StateStore() = default;
  // The last saved state; an empty state when none was ever saved.
  virtual Expected<AgentState> load() = 0;
  // Durably replaces the saved state; on error the previous state is still the saved one.
  virtual Status save(const AgentState& s) = 0;
  // Replaces the saved state like save(), for a state that guards no act: it need not be
  // durable when this returns, only once the next save() has returned (a crash before that
  // loads this state or the previous one). FileStateStore writes its record without an
  // fdatasync of its own; the next record's fdatasync makes both durable.
  virtual Status save_lazy(const AgentState& s) { return save(s); }
  // Called when the agent is idle with its current state: a chance to save it in a form that is
  // cheaper to keep (FileStateStore: a snapshot once its journal is half full). Best effort; a
  // failure leaves the saved state as it was and the next save or maintain() tries again.
  virtual void maintain(const AgentState&) {}
};

// `<state_dir>/agent-state.json` (a snapshot, with the sequence number of the state it holds)
// plus `<state_dir>/agent-state.journal`, an append-only log of the saves since the snapshot.
//
// The journal file is preallocated (written with zeros, fsynced, its dir entry fsynced) once, so
// a save overwrites blocks that already exist: one pwrite + fdatasync, which flushes only the
// data (no size change, no block allocation, no rename). Each record starts a 4 KiB block (a
// torn write cannot touch an earlier record) and is [u32 length][u32 CRC-32][JSON]: the
// services, the active order, the queue, and the results added since the previous record, with
// seq = previous + 1. load() reads the snapshot and
// applies the records that follow it in sequence; it stops at the first record that is torn
// (short, bad CRC) or out of sequence (left over from before the last snapshot), so a save
// interrupted by a crash is simply absent — as if save() had not been called.
//
// A snapshot (compaction: temp file + fsync + rename + fsync dir, then the journal starts over)
// is taken by the first save after construction, when a record does not fit, after a failed
// write, and by maintain() once the journal is half full. A schema-1 agent-state.json (the
// previous format, no journal) loads as the snapshot. save_lazy() appends its record without
// the fdatasync: a later save's fdatasync (which flushes every dirty block of the file) makes it
// durable; until then a crash leaves it torn (ignored), absent, or whole.
//
// A save also fails (code disk_full) when the filesystem has no room left for the next snapshot,
// even though the record itself would fit: the journal must stay compactable, and a full state
// disk refuses new work at once rather than in the middle of an order (docs/GUARANTEES.md §6).
class FileStateStore final : public StateStore {
 public:
  explicit FileStateStore(std::string state_dir, size_t journal_bytes = kJournalBytes);
  ~FileStateStore() override;
  FileStateStore(const FileStateStore&) = delete;
  FileStateStore& operator=(const FileStateStore&) = delete;
  Expected<AgentState> load() override;
  Status save(const AgentState& s) override;
  Status save_lazy(const AgentState& s) override;
  void maintain(const AgentState& s) override;
  const std::string& path() const { return path_; }
  const std::string& journal_path() const { return journal_path_; }
  // Snapshots taken so far (tests, diagnostics).
  int snapshots() const { return snapshots_; }

  static constexpr size_t kJournalBytes = 128 * 1024;  // 31 records (each starts a 4 KiB block)

 private:
  Status snapshot(const AgentState& s);
  Status append(const AgentState& s, bool sync);
  Status check_room() const;
  bool reuse_journal();

  std::string dir_;
  std::string path_;
  std::string journal_path_;
  size_t journal_bytes_;
  int fd_ = -1;                // the journal, open while valid
  bool need_snapshot_ = true;  // the next save writes a snapshot instead of a record
  uint64_t seq_ = 0;           // seq of the last state saved
  size_t offset_ = 0;          // where the next record goes
  size_t snapshot_bytes_ = 0;  // size of the last snapshot
  uint64_t results_mark_ = 0;  // AgentState::results_added at the last save
  int snapshots_ = 0;
};

// For tests: keeps the serialized state in memory and can be told to fail writes.
class MemoryStateStore final : public StateStore {
 public:
  Expected<AgentState> load() override;
  Status save(const AgentState& s) override;
  // A save (counted by saves() and failing like one) that is also counted by lazy_saves().
  Status save_lazy(const AgentState& s) override;
  // Makes `n` saves fail with `err` (e.g. disk_full), after letting `after` more succeed.
  void fail_next(int n, Error err = make_error("disk_full", "write agent-state.json: No space left on device"),
                 int after = 0);
  int saves() const;
  int lazy_saves() const;
  std::string text() const;

 private:
  mutable std::mutex mu_;
  std::string text_;
  int fail_ = 0;
  int fail_after_ = 0;
  Error err_;
  int saves_ = 0;
  int lazy_saves_ = 0;
};

}  // namespace gantry::agent
