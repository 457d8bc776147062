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
  int64_t started_wall_ms = 0;
  std::map<std::string, uint64_t> timings_ms;
};

struct AgentState {
  static constexpr int kSchema = 1;
  std::map<std::string, ServiceRecord> services;
  std::optional<ActiveOrder> active;
  std::deque<proto::Order> queue;
  std::deque<proto::Report> results;  // oldest first, at most kMaxResults

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
};

// `<state_dir>/agent-state.json`, written with temp file + fsync + rename + fsync dir.
class FileStateStore final : public StateStore {
 public:
  explicit FileStateStore(std::string state_dir);
  Expected<AgentState> load() override;
  Status save(const AgentState& s) override;
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

// For tests: keeps the serialized state in memory and can be told to fail writes.
class MemoryStateStore final : public StateStore {
 public:
  Expected<AgentState> load() override;
  Status save(const AgentState& s) override;
  // Makes `n` saves fail with `err` (e.g. disk_full), after letting `after` more succeed.
  void fail_next(int n, Error err = make_error("disk_full", "write agent-state.json: No space left on device"), int after = 0);
  int saves() const;
  std::string text() const;

 private:
  mutable std::mutex mu_;
  std::string text_;
  int fail_ = 0;
  int fail_after_ = 0;
  Error err_;
  int saves_ = 0;
};

}  // namespace gantry::agent
