// The rollout decision rules. Pure: (state, event, now) -> (state, actions); no clock, no I/O.
//
// These rules are what an operator relies on when writing a plan; they are the source of the
// README's "Writing a plan" section.
//
// Schedule
//   - Fixed at EvStart by make_schedule() (see planner.cc): batches are sizes like Ansible's
//     `serial`, percentages of the selected hosts rounded up, the last entry repeating, never an
//     empty batch; with domain_label the batches are filled domain by domain (sorted by value),
//     at most max_per_domain hosts of one domain per batch (a percentage resolves against that
//     domain's own host count, at least one; hosts without the label form the domain "").
//     pause_after must name existing batches. The schedule never changes afterwards.
//   - Every host of a batch gets an "update" order with a fresh id "r<rollout>-<seq>", including
//     hosts that already run the target (the agent answers at once). A host that is offline
//     when its batch is ordered is ordered anyway (the daemon resends until acknowledged) and
//     starts out unknown.
//
// Host results
//   - "succeeded" -> healthy; "failed_reverted" and "failed" -> failed (the message is kept).
//   - A report is applied only if it answers the host's current order and that order has no
//     result yet; stale (older order id), duplicate and unknown-host reports are recorded and
//     ignored, never counted twice. A report for an unknown host (it came back) is applied
//     normally, also after the rollout ended (the record then says what the host last said).
//   - A host ordered more than host_timeout_ms ago without a result becomes unknown and counts
//     as failed at once (whatever unknown_hosts says). host_timeout 0 disables this. A rollback
//     order that times out marks the host rollback-failed.
//   - A lost host that was ordered becomes unknown. unknown_hosts "fail": it counts as failed
//     at once; "wait": it counts once unknown_wait_ms has passed without it coming back.
//   - A host that comes back: if it belongs to the batch being worked on (not yet done) and the
//     rollout has not ended, it is in flight again (ordered; the daemon resends the order, the agent
//     de-duplicates) and no longer counts as failed. A host of an earlier batch keeps counting
//     as failed until it reports. While rolling back, a host that comes back running the target
//     is rolled back like the healthy ones.
//   - Once the rollout has stopped ordering (halted, not yet ended), an ordered or unknown host
//     that comes back (or greets again) without the target and without its update order in progress (its hello says
//     which order it is working on) never started that order: the order is withdrawn (the daemon does not resend it)
//     and the host is skipped, keeping what it runs. A late report of a withdrawn order is still applied (the agent may
//     have run it after all): the record follows the host.
//
// Failure budget
//   - failed = failed hosts + unknown hosts that count (above). The rollout stops when failed >
//     max_failures (resolved against the selected hosts, rounding up), or when any batch has
//     more failed hosts than max_failures_per_batch (a percentage resolves against that batch's
//     own size), or when the progress deadline (started_at + progress_deadline_ms; pauses
//     included) passes before the rollout ends.
//   - Stopping: no more update orders, in this step or any later one; hosts never ordered
//     become skipped; the reason is recorded. A batch whose unreachable hosts (unknown_hosts
//     "fail") already spend the budget orders none of its reachable hosts. Update orders the
//     same step created before it decided to stop are withdrawn before anything is sent: their
//     hosts are skipped (or stay unknown if unreachable), as if never ordered. With auto_rollback: broadcast "rollback"
//     and roll back (below). Without it: the rollout waits for the hosts still in flight, then ends failed.
//
// Batches
//   - A batch is done when none of its hosts is in flight (ordered, or unknown and not yet
//     counted). Then, if the budget holds: the last batch ends the rollout succeeded (possibly
//     with failures within budget); a batch listed in pause_after pauses the rollout until
//     `promote` (resume is refused); otherwise the next batch is ordered batch_delay_ms after
//     the batch was done.
//
// Rollback (automatic, or operator EvRollback)
//   - Hosts to roll back: healthy hosts (they run the target), including in-flight hosts that
//     report success later. They are ordered in reverse order of update (highest update_seq
//     first), at most rollback_batch_size rolling back at a time (0: all at once), each with an
//     order "rollback" to its from_version. A host with no from_version cannot be rolled back:
//     it becomes rollback-failed with a message, so the operator sees it in every count.
//   - A failed rollback of one host does not stop the others.
//   - The rollback ends (rolled back) when no host is rolling back, none is waiting to be
//     rolled back and none is in flight for update. Rollback has no deadline of its own beyond
//     host_timeout_ms per host.
//
// Operator
//   - pause: running -> paused (results are still applied, budget and deadlines still act).
//   - resume: operator pause -> running; refused while waiting for promote.
//   - promote: waiting for promote -> running, next batch ordered at once.
//   - abort: any non-terminal phase -> aborted: never-ordered hosts become skipped, "abort" is
//     broadcast, hosts are left as they are (rollback is a separate act).
//   - rollback: from running, paused, failed or aborted -> rolling back as above. Not from
//     succeeded (a rollback of a finished release is a new rollout to an older revision) nor
//     while already rolling back or rolled back.
//   - pause/resume/promote are refused while the rollout is stopping.
//   - An event that makes no sense in the current phase returns an error and the state as it was.
//
// Time: every event, not only EvTick, first applies the event and then every deadline that
// `now` has reached. next_deadline() is the earliest time at which a tick changes something.
#include "coordinator/rollout/state_machine.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns falsely (maybe-uninitialized) when a std::vector<std::variant> reallocates.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <optional>
#include <set>

#include "coordinator/rollout/json_text.h"
#include "coordinator/rollout/planner.h"

namespace gantry::rollout {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::kRunning:
      return "running";
    case Phase::kPaused:
      return "paused";
    case Phase::kRollingBack:
      return "rolling_back";
    case Phase::kSucceeded:
      return "succeeded";
    case Phase::kFailed:
      return "failed";
    case Phase::kRolledBack:
      return "rolled_back";
    case Phase::kAborted:
      return "aborted";
  }
  return "?";
}

bool is_terminal(Phase p) {
  return p == Phase::kSucceeded || p == Phase::kFailed || p == Phase::kRolledBack || p == Phase::kAborted;
}

const char* host_state_name(HostState s) {
  switch (s) {
    case HostState::kPending:
      return "pending";
    case HostState::kOrdered:
      return "ordered";
    case HostState::kHealthy:
      return "healthy";
    case HostState::kFailed:
      return "failed";
    case HostState::kUnknown:
      return "unknown";
    case HostState::kRollingBack:
      return "rolling_back";
    case HostState::kRolledBack:
      return "rolled_back";
    case HostState::kRollbackFailed:
      return "rollback_failed";
    case HostState::kSkipped:
      return "skipped";
  }
  return "?";
}

HostSlot* State::find(const std::string& host_id) {
  const auto valid = [&](const std::unordered_map<std::string, uint32_t>& m, const std::string& id) {
    auto it = m.find(id);
    return it != m.end() && it->second < hosts.size() && hosts[it->second].host_id == id;
  };
  if (const auto* m = index.map.get()) {
    auto it = m->find(host_id);
    if (it != m->end()) {
      if (it->second < hosts.size() && hosts[it->second].host_id == host_id) return &hosts[it->second];
    } else if (m->size() == hosts.size() &&
               (hosts.empty() || (valid(*m, hosts.front().host_id) && valid(*m, hosts.back().host_id)))) {
      return nullptr;  // a real miss: the index covers this host list
    }
  }
  // No index yet, or one built for another host list: rebuild (the first id wins, as in a scan).
  auto fresh = std::make_shared<std::unordered_map<std::string, uint32_t>>();
  fresh->reserve(hosts.size());
  for (size_t i = 0; i < hosts.size(); ++i) fresh->emplace(hosts[i].host_id, static_cast<uint32_t>(i));
  index.map = fresh;
  auto it = fresh->find(host_id);
  return it == fresh->end() ? nullptr : &hosts[it->second];
}

const HostSlot* State::find(const std::string& host_id) const { return const_cast<State*>(this)->find(host_id); }

Counts count(const State& s) {
  Counts c;
  for (const auto& h : s.hosts) {
    switch (h.state) {
      case HostState::kPending:
        ++c.pending;
        break;
      case HostState::kOrdered:
        ++c.ordered;
        break;
      case HostState::kHealthy:
        ++c.healthy;
        break;
      case HostState::kFailed:
        ++c.failed;
        break;
      case HostState::kUnknown:
        ++c.unknown;
        break;
      case HostState::kRollingBack:
        ++c.rolling_back;
        break;
      case HostState::kRolledBack:
        ++c.rolled_back;
        break;
      case HostState::kRollbackFailed:
        ++c.rollback_failed;
        break;
      case HostState::kSkipped:
        ++c.skipped;
        break;
    }
  }
  return c;
}

namespace {

bool in_flight_update(const HostSlot& h) {
  return h.state == HostState::kOrdered || (h.state == HostState::kUnknown && !h.unknown_counts);
}
bool counts_failed(const HostSlot& h) {
  return h.state == HostState::kFailed || (h.state == HostState::kUnknown && h.unknown_counts);
}
// A host some deadline applies to: host_timeout (ordered, rolling back) or unknown_wait.
bool has_deadline(const HostSlot& h) {
  return h.state == HostState::kOrdered || h.state == HostState::kRollingBack ||
         (h.state == HostState::kUnknown && !h.unknown_counts);
}

std::string fmt_ms(Millis ms) {
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string join(const std::vector<std::string>& names) {
  constexpr size_t kShown = 12;
  std::string out;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  if (names.size() > kShown) out += " and " + std::to_string(names.size() - kShown) + " more";
  return out;
}

std::string batch_label(const State& s, int b) {
  return "batch " + std::to_string(b + 1) + " of " + std::to_string(s.batches.size());
}

uint32_t total_budget(const State& s) {
  return s.plan.max_failures.resolve(static_cast<uint32_t>(s.hosts.size()), false);
}

// Why the budget is spent, or "" if it holds. `failed` and `failed_in_batch` count the hosts
// that count as failed (counts_failed), in all and per batch.
std::string budget_exceeded(const State& s, uint32_t failed, const std::vector<uint32_t>& failed_in_batch) {
  const uint32_t budget = total_budget(s);
  if (failed > budget) {
    return std::to_string(failed) + " failed or unknown host" + (failed == 1 ? "" : "s") +
           ", more than the failure budget of " + std::to_string(budget);
  }
  if (s.plan.max_failures_per_batch) {
    for (size_t b = 0; b < s.batches.size(); ++b) {
      const uint32_t bf = b < failed_in_batch.size() ? failed_in_batch[b] : 0;
      const uint32_t bb = *batch_budget(s.plan, static_cast<uint32_t>(s.batches[b].size()));
      if (bf > bb) {
        return std::to_string(bf) + " failed or unknown hosts in " + batch_label(s, static_cast<int>(b)) +
               ", more than its budget of " + std::to_string(bb);
      }
    }
  }
  return "";
}

// next_deadline's parts: one host's deadline, then the rollout's own.
void take_deadline(Millis& best, Millis t) {
  if (best == 0 || t < best) best = t;
}
void take_host_deadline(const Plan& p, const HostSlot& h, Millis& best) {
  if (p.host_timeout_ms > 0 && (h.state == HostState::kOrdered || h.state == HostState::kRollingBack)) {
    take_deadline(best, h.ordered_at + p.host_timeout_ms);
  }
  if (h.state == HostState::kUnknown && !h.unknown_counts) take_deadline(best, h.lost_at + p.unknown_wait_ms);
}
Millis with_rollout_deadlines(const State& s, Millis best) {
  const Plan& p = s.plan;
  const bool active = s.phase == Phase::kRunning || s.phase == Phase::kPaused;
  if (active && !s.halted) {
    if (p.progress_deadline_ms > 0) take_deadline(best, s.started_at + p.progress_deadline_ms);
    if (s.phase == Phase::kRunning && s.completed_batch == s.current_batch && s.analysis.gate_batch < 0 &&
        s.current_batch + 1 < static_cast<int>(s.batches.size())) {
      take_deadline(best, s.next_batch_at);
    }
  }
  return best;
}

class Machine {
 public:
  Machine(State& s, Millis now, std::vector<Action>& acts) : s_(s), now_(now), acts_(acts) { recount(); }

  // ---- derived counts: one pass here, then kept exact by set() ----

  void recount() {
    in_flight_ = failed_ = 0;
    failed_in_batch_.assign(s_.batches.size(), 0);
    watched_.clear();
    for (const auto& h : s_.hosts) tally(h, +1);
  }
  uint32_t pos(const HostSlot& h) const { return static_cast<uint32_t>(&h - s_.hosts.data()); }
  void tally(const HostSlot& h, int d) {
    if (in_flight_update(h)) in_flight_ += d;
    if (counts_failed(h)) {
      failed_ += d;
      if (h.batch >= 0 && static_cast<size_t>(h.batch) < failed_in_batch_.size()) failed_in_batch_[h.batch] += d;
    }
    if (has_deadline(h)) {
      if (d > 0)
        watched_.insert(pos(h));
      else
        watched_.erase(pos(h));
    }
  }
  // Every change to a slot goes through touch() (any field) or set() (state and whether an
  // unknown host counts), so the daemon persists exactly the changed slots.
  void touch(const HostSlot& h) { touched_.insert(pos(h)); }
  void set(HostSlot& h, HostState st, bool counts) {
    tally(h, -1);
    h.state = st;
    h.unknown_counts = counts;
    tally(h, +1);
    touch(h);
  }
  void set(HostSlot& h, HostState st) { set(h, st, h.unknown_counts); }
  uint32_t total_failed() const { return failed_; }

  // next_deadline(s_) from the hosts that have a deadline (watched_) instead of all of them.
  Millis deadline() const {
    if (is_terminal(s_.phase) || s_.hosts.empty()) return 0;
    Millis best = 0;
    for (uint32_t i : watched_) take_host_deadline(s_.plan, s_.hosts[i], best);
    return with_rollout_deadlines(s_, best);
  }
  std::string budget_exceeded() const { return rollout::budget_exceeded(s_, failed_, failed_in_batch_); }

  // Positions of the slots changed since construction (all of them after a start).
  std::vector<uint32_t> touched() const {
    if (replaced_) {
      std::vector<uint32_t> all(s_.hosts.size());
      for (uint32_t i = 0; i < all.size(); ++i) all[i] = i;
      return all;
    }
    return {touched_.begin(), touched_.end()};
  }

  // The counts as a fresh pass sees them: the debug check after each step.
  bool counts_exact() const {
    Machine fresh(s_, now_, acts_);
    return fresh.in_flight_ == in_flight_ && fresh.failed_ == failed_ && fresh.failed_in_batch_ == failed_in_batch_ &&
           fresh.watched_ == watched_;
  }

  void record(std::string m) { acts_.push_back(ActRecord{std::move(m)}); }

  std::string new_order_id() { return "r" + std::to_string(s_.id) + "-" + std::to_string(s_.next_order_seq++); }

  void skip_pending() {
    std::vector<std::string> names;
    for (auto& h : s_.hosts) {
      if (h.state == HostState::kPending) {
        // Not touched: the step's header (halted or ended) makes a stored pending slot skipped
        // (State::pending_means_skipped), so the skipped slots cost no row writes.
        tally(h, -1);
        h.state = HostState::kSkipped;
        tally(h, +1);
        names.push_back(h.host_id);
      }
    }
    if (!names.empty()) record("not ordered, skipped: " + join(names));
  }

  void finish(Phase p, const std::string& sentence) {
    s_.phase = p;
    s_.waiting_promote = false;
    s_.finished_at = now_;
    skip_pending();
    if (s_.end_reason.empty()) s_.end_reason = sentence;
    const Counts c = count(s_);
    record("rollout " + std::string(phase_name(p)) + ": " + sentence + " (healthy " + std::to_string(c.healthy) +
           ", failed " + std::to_string(c.failed) + ", unknown " + std::to_string(c.unknown) + ", rolled back " +
           std::to_string(c.rolled_back) + ", rollback failed " + std::to_string(c.rollback_failed) + ", skipped " +
           std::to_string(c.skipped) + ")");
    acts_.push_back(ActFinished{p});
  }

  // Stop ordering updates; roll back or wait for the hosts in flight, then fail.
  void halt(const std::string& reason, bool rollback) {
    s_.halted = true;
    s_.end_reason = reason;
    s_.waiting_promote = false;
    s_.finished_at = 0;
    if (rollback) {
      s_.phase = Phase::kRollingBack;
      record("stopping: " + reason + "; rolling back the changed hosts in reverse order of update");
      acts_.push_back(ActBroadcast{SignalKind::kRollback});
    } else {
      const uint32_t flying = in_flight_;
      record("stopping: " + reason + "; automatic rollback is off" +
             (flying ? ", waiting for " + std::to_string(flying) + " host(s) in flight" : ""));
    }
    skip_pending();
  }

  void order_batch(int b) {
    s_.current_batch = b;
    std::vector<std::string> names;
    // Unreachable hosts first: when they alone spend the budget (unknown_hosts "fail"), no
    // reachable host of the batch is ordered (they stay pending and the stop skips them).
    std::vector<HostSlot*> slots;
    for (const auto& id : s_.batches[static_cast<size_t>(b)]) {
      HostSlot* h = s_.find(id);
      if (!h || h->state != HostState::kPending) continue;  // cannot happen with a valid state
      slots.push_back(h);
    }
    std::stable_partition(slots.begin(), slots.end(), [](const HostSlot* h) { return !h->online; });
    for (HostSlot* h : slots) {
      if (h->online && !budget_exceeded().empty()) break;
      touch(*h);
      h->order_id = new_order_id();
      h->ordered_at = now_;
      h->update_seq = s_.next_update_seq++;
      h->message.clear();
      if (h->online) {
        set(*h, HostState::kOrdered);
      } else {
        h->lost_at = now_;
        set(*h, HostState::kUnknown, s_.plan.unknown_hosts == UnknownHosts::kFail);
      }
      names.push_back(h->host_id);
      acts_.push_back(ActOrder{h->host_id, h->order_id, OrderKind::kUpdate, s_.version});
    }
    // (Schedule order in the record, whatever order they were ordered in.)
    std::vector<std::string> in_order;
    for (const auto& id : s_.batches[static_cast<size_t>(b)])
      if (std::find(names.begin(), names.end(), id) != names.end()) in_order.push_back(id);
    names = std::move(in_order);
    record(batch_label(s_, b) + ": ordered " + join(names) + " to " + s_.version);
    for (const auto& id : names) {
      const HostSlot* h = s_.find(id);
      if (h->state == HostState::kUnknown) record(unknown_sentence(*h, "is unreachable"));
    }
  }

  std::string unknown_sentence(const HostSlot& h, const std::string& what) const {
    if (h.unknown_counts) return h.host_id + " " + what + "; it counts as failed (unknown_hosts: fail)";
    return h.host_id + " " + what + "; waiting up to " + fmt_ms(s_.plan.unknown_wait_ms) +
           " before it counts as failed";
  }

  // Once stopped (halted or ended), the update orders among this step's actions are withdrawn
  // before anything is sent: nothing is ordered after the decision to stop, not even by the
  // step that made it. Reachable hosts are skipped as if never ordered; unreachable ones stay
  // unknown (they count as the budget's words say) with no order to resend. True if any.
  bool withdraw_unsent_updates() {
    if (!s_.halted && !is_terminal(s_.phase)) return false;
    std::vector<std::string> names;
    std::erase_if(acts_, [&](const Action& a) {
      const auto* o = std::get_if<ActOrder>(&a);
      if (!o || o->kind != OrderKind::kUpdate) return false;
      HostSlot* h = s_.find(o->host_id);
      if (h && h->order_id == o->order_id) {
        if (h->state == HostState::kOrdered) {
          set(*h, HostState::kSkipped, false);
          h->order_id.clear();
          h->ordered_at = 0;
          h->message = "not ordered: the rollout stopped";
        } else {
          touch(*h);
          h->message = "unreachable; its update order was withdrawn: the rollout stopped";
        }
        names.push_back(h->host_id);
      }
      return true;
    });
    if (names.empty()) return false;
    record("withdrew the update orders of " + join(names) + " before they were sent: the rollout stopped");
    return true;
  }

  // Apply every deadline `now` has reached and take every decision that follows.
  void settle() {
    for (int guard = 0; guard < 10'000 && !is_terminal(s_.phase); ++guard) {
      if (!settle_once()) break;
    }
  }

  bool settle_once() {
    bool changed = false;
    const Plan& p = s_.plan;
    // Host timeouts.
    // Only hosts with a deadline can time out (watched_, in schedule order); a copy, as set()
    // changes the set.
    if (p.host_timeout_ms > 0) {
      for (uint32_t i : std::vector<uint32_t>(watched_.begin(), watched_.end())) {
        HostSlot& h = s_.hosts[i];
        if (now_ < h.ordered_at + p.host_timeout_ms) continue;
        if (h.state == HostState::kOrdered) {
          set(h, HostState::kUnknown, true);
          h.lost_at = now_;
          h.message = "no report within host_timeout " + fmt_ms(p.host_timeout_ms);
          record(h.host_id + " sent no report within " + fmt_ms(p.host_timeout_ms) +
                 " of its order; it is unknown and counts as failed");
          changed = true;
        } else if (h.state == HostState::kRollingBack) {
          set(h, HostState::kRollbackFailed);
          h.message = "no rollback report within host_timeout " + fmt_ms(p.host_timeout_ms);
          record(h.host_id + " sent no report within " + fmt_ms(p.host_timeout_ms) +
                 " of its rollback order; rollback failed");
          changed = true;
        }
      }
    }
    // Unknown hosts whose grace has run out.
    for (uint32_t i : std::vector<uint32_t>(watched_.begin(), watched_.end())) {
      HostSlot& h = s_.hosts[i];
      if (h.state == HostState::kUnknown && !h.unknown_counts && now_ >= h.lost_at + p.unknown_wait_ms) {
        set(h, HostState::kUnknown, true);
        record(h.host_id + " still unreachable after " + fmt_ms(p.unknown_wait_ms) + "; it counts as failed");
        changed = true;
      }
    }
    const bool active = s_.phase == Phase::kRunning || s_.phase == Phase::kPaused;
    if (active && !s_.halted) {
      if (p.progress_deadline_ms > 0 && now_ >= s_.started_at + p.progress_deadline_ms) {
        halt("progress deadline of " + fmt_ms(p.progress_deadline_ms) + " passed", p.auto_rollback);
        return true;
      }
      std::string why = budget_exceeded();
      if (!why.empty()) {
        halt(why, p.auto_rollback);
        return true;
      }
    }

    if (s_.phase == Phase::kRollingBack) return roll_back() || changed;

    if (s_.halted) {
      if (in_flight_ > 0) return changed;
      finish(Phase::kFailed, s_.end_reason);
      return true;
    }

    // Batch progress.
    const int nb = static_cast<int>(s_.batches.size());
    if (s_.current_batch >= 0 && s_.completed_batch < s_.current_batch) {
      if (in_flight_ > 0) return changed;
      const int b = s_.current_batch;
      s_.completed_batch = b;
      uint32_t healthy = 0, failed = 0, unknown = 0;
      for (const auto& id : s_.batches[static_cast<size_t>(b)]) {
        const HostSlot* hp = s_.find(id);
        if (!hp || hp->batch != b) continue;
        const HostSlot& h = *hp;
        healthy += h.state == HostState::kHealthy;
        failed += h.state == HostState::kFailed;
        unknown += h.state == HostState::kUnknown;
      }
      record(batch_label(s_, b) + " done: " + std::to_string(healthy) + " healthy, " + std::to_string(failed) +
             " failed, " + std::to_string(unknown) + " unknown; failures " + std::to_string(total_failed()) +
             " of budget " + std::to_string(total_budget(s_)));
      if (p.analysis.gates_batches()) {
        open_analysis_gate(b);
        return true;
      }
      if (after_batch_done(b)) return true;
      changed = true;
    }
    // The analysis gate after a batch (analysis.h): the batch's sequel waits until it passes.
    if (s_.analysis.gate_batch >= 0 && s_.analysis.gate_batch == s_.completed_batch) {
      if (!gate_passed(p.analysis, s_.analysis, nullptr)) return changed;
      const int b = s_.analysis.gate_batch;
      s_.analysis.gate_batch = -1;
      record("analysis after " + batch_label(s_, b) + " passed");
      if (after_batch_done(b)) return true;
      changed = true;
    }
    if (s_.phase == Phase::kRunning && s_.completed_batch == s_.current_batch && s_.analysis.gate_batch < 0 &&
        s_.current_batch + 1 < nb && now_ >= s_.next_batch_at) {
      order_batch(s_.current_batch + 1);
      return true;
    }
    return changed;
  }

  // What follows a done batch (and its passed analysis gate): the end, a pause for promotion,
  // or the next batch after batch_delay. True if that took a decision of its own.
  bool after_batch_done(int b) {
    const Plan& p = s_.plan;
    const int nb = static_cast<int>(s_.batches.size());
    if (b + 1 >= nb) {
      finish(Phase::kSucceeded, "all " + std::to_string(nb) + " batches done, " + std::to_string(total_failed()) +
                                    " failed or unknown within the budget of " + std::to_string(total_budget(s_)));
      return true;
    }
    if (std::find(p.pause_after.begin(), p.pause_after.end(), static_cast<uint32_t>(b)) != p.pause_after.end()) {
      s_.phase = Phase::kPaused;
      s_.waiting_promote = true;
      s_.analysis.hold = false;
      record("paused after " + batch_label(s_, b) + " (pause_after); `gantry rollout promote` continues with batch " +
             std::to_string(b + 2));
      return true;
    }
    s_.next_batch_at = now_ + p.batch_delay_ms;
    if (p.batch_delay_ms > 0) {
      record("waiting " + fmt_ms(p.batch_delay_ms) + " (batch_delay) before " + batch_label(s_, b + 1));
    }
    return false;
  }

  void open_analysis_gate(int b) {
    const AnalysisSpec& a = s_.plan.analysis;
    s_.analysis.gate_batch = b;
    s_.analysis.gate_since = now_;
    s_.analysis.gate_until = now_ + a.soak_ms;
    const bool last = b + 1 >= static_cast<int>(s_.batches.size());
    record("analysing " + batch_label(s_, b) + ": " + (a.soak_ms > 0 ? "soak " + fmt_ms(a.soak_ms) + ", then " : "") +
           "every after-batch query must pass before " + (last ? "the rollout succeeds" : batch_label(s_, b + 1)));
  }

  bool roll_back() {
    bool changed = false;
    std::vector<HostSlot*> todo;
    uint32_t rolling = 0;
    for (auto& h : s_.hosts) {
      if (h.state == HostState::kRollingBack) ++rolling;
      if (h.state != HostState::kHealthy) continue;
      if (h.from_version.empty()) {
        set(h, HostState::kRollbackFailed);
        h.message = "no previous release to roll back to; it keeps " + s_.version;
        record(h.host_id + " ran nothing before this rollout, so it cannot be rolled back; it keeps " + s_.version);
        changed = true;
        continue;
      }
      todo.push_back(&h);
    }
    std::sort(todo.begin(), todo.end(),
              [](const HostSlot* a, const HostSlot* b) { return a->update_seq > b->update_seq; });
    const uint32_t cap =
        s_.plan.rollback_batch_size == 0 ? std::numeric_limits<uint32_t>::max() : s_.plan.rollback_batch_size;
    std::vector<std::string> names;
    for (HostSlot* h : todo) {
      if (rolling >= cap) break;
      set(*h, HostState::kRollingBack);
      h->order_id = new_order_id();
      h->ordered_at = now_;
      h->message.clear();
      ++rolling;
      names.push_back(h->host_id + " (to " + h->from_version + ")");
      acts_.push_back(ActOrder{h->host_id, h->order_id, OrderKind::kRollback, h->from_version});
    }
    if (!names.empty()) {
      record("rolling back " + join(names));
      changed = true;
    }
    const bool waiting = rolling > 0 || todo.size() > names.size() || in_flight_ > 0;
    if (!waiting) {
      finish(Phase::kRolledBack, s_.end_reason.empty() ? "rolled back" : s_.end_reason);
      return true;
    }
    return changed;
  }

  // ---- events ----

  Status on(const EvStart& e) {
    if (!s_.hosts.empty() || s_.current_batch != -1) {
      return make_error("state", "rollout " + std::to_string(s_.id) + " has already started");
    }
    if (e.service.empty()) return make_error("plan", "the rollout needs a service");
    if (e.version.empty()) return make_error("plan", "the rollout needs a target version");
    auto sched = make_schedule(e.plan, e.hosts);
    if (!sched) return sched.error();
    State n;
    n.id = e.id;
    n.service = e.service;
    n.version = e.version;
    n.selector = e.selector;
    n.plan = e.plan;
    n.batches = sched->batches;
    n.started_at = now_;
    std::map<std::string, const HostCandidate*> by_id;
    for (const auto& h : e.hosts) by_id[h.host_id] = &h;
    for (size_t b = 0; b < n.batches.size(); ++b) {
      for (const auto& id : n.batches[b]) {
        const HostCandidate& c = *by_id[id];
        HostSlot slot;
        slot.host_id = id;
        if (!e.plan.domain_label.empty()) {
          auto it = c.labels.find(e.plan.domain_label);
          if (it != c.labels.end()) slot.domain = it->second;
        }
        slot.from_version = c.running_version;
        slot.running_version = c.running_version;
        slot.online = c.online;
        slot.batch = static_cast<int>(b);
        n.hosts.push_back(std::move(slot));
      }
    }
    s_ = std::move(n);
    replaced_ = true;
    recount();
    std::string sizes;
    for (const auto& b : s_.batches) sizes += (sizes.empty() ? "" : ", ") + std::to_string(b.size());
    record("rollout " + std::to_string(s_.id) + " of " + s_.service + " to " + s_.version +
           " started: " + std::to_string(s_.hosts.size()) + " hosts in " + std::to_string(s_.batches.size()) +
           " batches (" + sizes + "); failure budget " + std::to_string(sched->failure_budget_hosts) + " host(s)");
    return Status::Ok();
  }

  Status on(const EvReport& e) {
    HostSlot* h = s_.find(e.host_id);
    if (!h) {
      record("report from " + e.host_id + ", which is not in this rollout; ignored");
      return Status::Ok();
    }
    if (e.order_id != h->order_id) {
      record("stale report from " + e.host_id + " for order " + e.order_id +
             " (current order: " + (h->order_id.empty() ? "none" : h->order_id) + "); ignored");
      return Status::Ok();
    }
    // A skipped host with an order id had that order withdrawn; a report of it says the host ran
    // it after all, and the record follows the host.
    const bool update = h->state == HostState::kOrdered || h->state == HostState::kUnknown ||
                        (h->state == HostState::kSkipped && !h->order_id.empty());
    const bool rollback = h->state == HostState::kRollingBack;
    if (!update && !rollback) {
      record("duplicate report from " + e.host_id + " for order " + e.order_id + "; ignored");
      return Status::Ok();
    }
    const bool ok = e.outcome == Outcome::kSucceeded;
    touch(*h);
    h->online = true;
    set(*h, h->state, false);
    if (!e.running_version.empty()) h->running_version = e.running_version;
    h->message = e.message;
    const std::string late = is_terminal(s_.phase) ? " (after the rollout ended)" : "";
    if (update) {
      set(*h, ok ? HostState::kHealthy : HostState::kFailed);
      if (ok) {
        record(h->host_id + " healthy on " + s_.version + late);
      } else {
        std::string what = h->host_id + " failed" + (e.outcome == Outcome::kFailedReverted ? " and reverted" : "") +
                           (e.message.empty() ? "" : ": " + e.message);
        if (!is_terminal(s_.phase)) {
          what += "; failures " + std::to_string(total_failed()) + " of budget " + std::to_string(total_budget(s_));
          if (!s_.halted && !budget_exceeded().empty()) what += " -> stopping";
        }
        record(what + late);
      }
    } else {
      set(*h, ok ? HostState::kRolledBack : HostState::kRollbackFailed);
      record(h->host_id +
             (ok ? " rolled back to " + h->from_version
                 : " failed to roll back" + (e.message.empty() ? "" : ": " + e.message)) +
             late);
    }
    return Status::Ok();
  }

  Status on(const EvHostLost& e) {
    HostSlot* h = s_.find(e.host_id);
    if (!h || !h->online) return Status::Ok();
    touch(*h);
    h->online = false;
    if (h->state == HostState::kOrdered && !is_terminal(s_.phase)) {
      h->lost_at = now_;
      set(*h, HostState::kUnknown, s_.plan.unknown_hosts == UnknownHosts::kFail);
      record(unknown_sentence(*h, "became unreachable before reporting"));
    } else {
      record(h->host_id + " became unreachable (" + host_state_name(h->state) + ")");
    }
    return Status::Ok();
  }

  Status on(const EvHostBack& e) {
    HostSlot* h = s_.find(e.host_id);
    if (!h) return Status::Ok();
    touch(*h);
    const bool was_online = h->online;
    h->online = true;
    if (!e.running_version.empty()) h->running_version = e.running_version;
    // A withdrawn order's host back on the target ran it after all: rolled back like the others.
    const bool withdrawn = h->state == HostState::kSkipped && !h->order_id.empty();
    if (withdrawn && s_.phase == Phase::kRollingBack && e.running_version == s_.version) {
      set(*h, HostState::kHealthy, false);
      h->message = "came back running " + s_.version;
      record(h->host_id + " is back running " + s_.version + " (it ran " + h->order_id +
             " after all); it will be rolled back");
      return Status::Ok();
    }
    // Stopped, and the host (back, or greeting again) is neither on the target nor working on its
    // update order: it never started it, and now never will.
    const bool outstanding = h->state == HostState::kUnknown || h->state == HostState::kOrdered;
    if (outstanding && s_.halted && !is_terminal(s_.phase) && e.running_version != s_.version &&
        e.order_in_progress != h->order_id) {
      set(*h, HostState::kSkipped, false);
      h->message = "its update order " + h->order_id + " was withdrawn: the rollout stopped before the host started it";
      record(h->host_id + " is back running " + (e.running_version.empty() ? "nothing" : e.running_version) +
             " without having started " + h->order_id + "; the rollout has stopped, so the order is withdrawn and " +
             "the host skipped");
      return Status::Ok();
    }
    if (h->state != HostState::kUnknown || is_terminal(s_.phase)) {
      if (!was_online) record(h->host_id + " is reachable again (" + host_state_name(h->state) + ")");
      return Status::Ok();
    }
    if (s_.phase == Phase::kRollingBack && !e.running_version.empty() && e.running_version == s_.version) {
      set(*h, HostState::kHealthy, false);
      h->message = "came back running " + s_.version;
      record(h->host_id + " is back running " + s_.version + "; it will be rolled back");
    } else if (h->batch == s_.current_batch && s_.completed_batch < s_.current_batch) {
      set(*h, HostState::kOrdered, false);
      h->ordered_at = now_;
      record(h->host_id + " is back; its order " + h->order_id + " is in flight again");
    } else {
      record(h->host_id + " is back; it counts as failed until it reports on order " + h->order_id);
    }
    return Status::Ok();
  }

  Status on(const EvTick&) { return Status::Ok(); }

  // An evaluation of an analysis query (analysis.cc judges it): a failed query stops the
  // rollout as a spent budget does; an inconclusive one follows plan.analysis.inconclusive.
  Status on(const EvAnalysis& e) {
    const AnalysisSpec& spec = s_.plan.analysis;
    if (!spec.enabled()) return make_error("state", "the rollout's plan has no analysis");
    if (s_.halted || (s_.phase != Phase::kRunning && s_.phase != Phase::kPaused)) {
      record("analysis evaluation after the rollout stopped; ignored");
      return Status::Ok();
    }
    const Applied a = apply_measurement(spec, s_.analysis, e.m);
    record(a.line);
    if (!a.applied) return Status::Ok();
    const AnalysisQuery& q = spec.queries[e.m.query];
    const std::string& said = s_.analysis.queries[e.m.query].message;
    if (a.query_failed) {
      s_.analysis.hold = false;
      halt("analysis " + q.name + " failed: " + said + " (" + std::to_string(q.failure_limit) + " in a row)",
           s_.plan.auto_rollback);
      return Status::Ok();
    }
    if (a.verdict == Verdict::kInconclusive) {
      if (spec.inconclusive == Inconclusive::kFail) {
        s_.analysis.hold = false;
        halt("analysis " + q.name + " is inconclusive (" + said + "; inconclusive: fail)", s_.plan.auto_rollback);
      } else if (spec.inconclusive == Inconclusive::kPause && s_.phase == Phase::kRunning) {
        s_.phase = Phase::kPaused;
        s_.analysis.hold = true;
        record("paused: analysis " + q.name +
               " is inconclusive (inconclusive: pause); it resumes when every query has a value again");
      } else if (spec.inconclusive == Inconclusive::kIgnore) {
        record("analysis " + q.name + " inconclusive, ignored (inconclusive: ignore)");
      }
      return Status::Ok();
    }
    if (s_.analysis.hold && s_.phase == Phase::kPaused && !s_.waiting_promote && !any_inconclusive(spec, s_.analysis)) {
      s_.phase = Phase::kRunning;
      s_.analysis.hold = false;
      record("resumed: every analysis query has a value again");
    }
    return Status::Ok();
  }

  Status stopping_error(const char* what) {
    return make_error("state", std::string("cannot ") + what + ": the rollout is stopping (" + s_.end_reason + ")");
  }

  Status on(const EvPause&) {
    if (s_.phase != Phase::kRunning) {
      return make_error("state", std::string("cannot pause: the rollout is ") + phase_name(s_.phase));
    }
    if (s_.halted) return stopping_error("pause");
    s_.phase = Phase::kPaused;
    record("paused by the operator; hosts in flight finish, no new batch is ordered");
    return Status::Ok();
  }

  Status on(const EvResume&) {
    if (s_.phase != Phase::kPaused) {
      return make_error("state", std::string("cannot resume: the rollout is ") + phase_name(s_.phase));
    }
    if (s_.halted) return stopping_error("resume");
    if (s_.waiting_promote) {
      return make_error("state", "the rollout waits for promotion after " + batch_label(s_, s_.completed_batch) +
                                     "; use `gantry rollout promote`");
    }
    s_.phase = Phase::kRunning;
    s_.analysis.hold = false;
    record("resumed by the operator");
    return Status::Ok();
  }

  Status on(const EvPromote&) {
    if (s_.phase != Phase::kPaused || !s_.waiting_promote) {
      return make_error("state", std::string("cannot promote: the rollout is ") + phase_name(s_.phase) +
                                     ", not waiting for promotion");
    }
    if (s_.halted) return stopping_error("promote");
    s_.phase = Phase::kRunning;
    s_.waiting_promote = false;
    s_.analysis.hold = false;
    s_.next_batch_at = now_;
    record("promoted by the operator after " + batch_label(s_, s_.completed_batch));
    return Status::Ok();
  }

  Status on(const EvAbort&) {
    if (is_terminal(s_.phase)) {
      return make_error("state", std::string("cannot abort: the rollout already ended ") + phase_name(s_.phase));
    }
    s_.end_reason = "aborted by the operator";
    acts_.push_back(ActBroadcast{SignalKind::kAbort});
    finish(Phase::kAborted, "aborted by the operator; hosts are left as they are");
    return Status::Ok();
  }

  Status on(const EvRollback&) {
    const Phase p = s_.phase;
    if (p == Phase::kRollingBack || p == Phase::kRolledBack || p == Phase::kSucceeded) {
      return make_error("state", std::string("cannot roll back: the rollout is ") + phase_name(p) +
                                     (p == Phase::kSucceeded ? "; roll back a finished release with "
                                                               "`gantry rollback SERVICE --to-revision N`"
                                                             : ""));
    }
    if (s_.hosts.empty()) return make_error("state", "cannot roll back: the rollout has not started");
    if (is_terminal(p)) record("rollback requested after the rollout ended " + std::string(phase_name(p)));
    halt("rollback requested by the operator", true);
    return Status::Ok();
  }

 private:
  State& s_;
  Millis now_;
  std::vector<Action>& acts_;
  uint32_t in_flight_ = 0;  // hosts in flight for update (in_flight_update)
  uint32_t failed_ = 0;     // hosts that count as failed (counts_failed)
  std::vector<uint32_t> failed_in_batch_;
  std::set<uint32_t> watched_;  // positions of hosts with a deadline (has_deadline)
  std::set<uint32_t> touched_;  // positions of changed slots
  bool replaced_ = false;       // the host list was replaced (start)
};

// ---- JSON ----

using nlohmann::json;

const Phase kPhases[] = {Phase::kRunning, Phase::kPaused,     Phase::kRollingBack, Phase::kSucceeded,
                         Phase::kFailed,  Phase::kRolledBack, Phase::kAborted};
const HostState kHostStates[] = {HostState::kPending,    HostState::kOrdered,        HostState::kHealthy,
                                 HostState::kFailed,     HostState::kUnknown,        HostState::kRollingBack,
                                 HostState::kRolledBack, HostState::kRollbackFailed, HostState::kSkipped};

}  // namespace

// The value whose name is `name` among `all` (phases, host states), or nullopt.
template <typename T, size_t N>
std::optional<T> by_name(const std::string& name, const T (&all)[N], const char* (*name_of)(T)) {
  for (T x : all) {
    if (name == name_of(x)) return x;
  }
  return std::nullopt;
}

json HostSlot::to_json() const {
  const HostSlot& h = *this;
  return {{"host_id", h.host_id},
          {"domain", h.domain},
          {"from_version", h.from_version},
          {"state", host_state_name(h.state)},
          {"batch", h.batch},
          {"order_id", h.order_id},
          {"ordered_at", h.ordered_at},
          {"lost_at", h.lost_at},
          {"update_seq", h.update_seq},
          {"message", h.message},
          {"online", h.online},
          {"unknown_counts", h.unknown_counts},
          {"running_version", h.running_version}};
}

std::string HostSlot::to_json_text() const {
  std::string out;
  out.reserve(224 + host_id.size() + message.size());
  json_text::Object o(out);
  o.num("batch", batch)
      .str("domain", domain)
      .str("from_version", from_version)
      .str("host_id", host_id)
      .num("lost_at", lost_at)
      .str("message", message)
      .boolean("online", online)
      .str("order_id", order_id)
      .num("ordered_at", ordered_at)
      .str("running_version", running_version)
      .str("state", host_state_name(state))
      .boolean("unknown_counts", unknown_counts)
      .unum("update_seq", update_seq)
      .close();
  return out;
}

Expected<HostSlot> HostSlot::from_json(const json& hj) {
  try {
    HostSlot h;
    hj.at("host_id").get_to(h.host_id);
    hj.at("domain").get_to(h.domain);
    hj.at("from_version").get_to(h.from_version);
    const std::string st = hj.at("state").get<std::string>();
    const auto state = by_name(st, kHostStates, host_state_name);
    if (!state) return make_error("state", "stored rollout state: unknown host state \"" + st + "\"");
    h.state = *state;
    hj.at("batch").get_to(h.batch);
    hj.at("order_id").get_to(h.order_id);
    hj.at("ordered_at").get_to(h.ordered_at);
    hj.at("lost_at").get_to(h.lost_at);
    hj.at("update_seq").get_to(h.update_seq);
    hj.at("message").get_to(h.message);
    hj.at("online").get_to(h.online);
    hj.at("unknown_counts").get_to(h.unknown_counts);
    hj.at("running_version").get_to(h.running_version);
    return h;
  } catch (const json::exception& ex) {
    return make_error("state", std::string("stored host slot is malformed: ") + ex.what());
  }
}

json State::to_json() const {
  json j = header_json();
  j["batches"] = batches;
  json hs = json::array();
  for (const auto& h : hosts) hs.push_back(h.to_json());
  j["hosts"] = std::move(hs);
  return j;
}

json State::header_json() const {
  return {{"id", id},
          {"service", service},
          {"version", version},
          {"selector", selector},
          {"plan", plan.to_json()},
          {"phase", phase_name(phase)},
          {"waiting_promote", waiting_promote},
          // Not the batch lists (10,000 host ids): the slots are in schedule order and name their
          // batch, so from_json rebuilds them.
          {"batch_count", batches.size()},
          {"current_batch", current_batch},
          {"completed_batch", completed_batch},
          {"started_at", started_at},
          {"next_batch_at", next_batch_at},
          {"finished_at", finished_at},
          {"next_order_seq", next_order_seq},
          {"next_update_seq", next_update_seq},
          {"end_reason", end_reason},
          {"halted", halted},
          {"analysis", analysis.to_json()}};
}

bool State::pending_means_skipped() const { return halted || is_terminal(phase); }

Expected<State> State::from_json(const json& j) {
  try {
    std::vector<json> slots;
    for (const auto& hj : j.at("hosts")) slots.push_back(hj);
    return from_json(j, slots);
  } catch (const json::exception& ex) {
    return make_error("state", std::string("stored rollout state is malformed: ") + ex.what());
  }
}

Expected<State> State::from_json(const json& j, const std::vector<json>& slots) {
  try {
    State s;
    j.at("id").get_to(s.id);
    j.at("service").get_to(s.service);
    j.at("version").get_to(s.version);
    s.selector = j.value("selector", std::string());  // absent in states stored before it was kept
    auto plan = Plan::from_json(j.at("plan"));
    if (!plan) return make_error("state", "stored rollout state: " + plan.error().message);
    s.plan = *plan;
    const std::string ph = j.at("phase").get<std::string>();
    const auto phase = by_name(ph, kPhases, phase_name);
    if (!phase) return make_error("state", "stored rollout state: unknown phase \"" + ph + "\"");
    s.phase = *phase;
    j.at("waiting_promote").get_to(s.waiting_promote);
    const bool batch_lists = j.contains("batches");
    if (batch_lists)
      j.at("batches").get_to(s.batches);
    else {
      const size_t n = j.at("batch_count").get<size_t>();
      if (n > slots.size()) return make_error("state", "stored rollout state: more batches than hosts");
      s.batches.resize(n);
    }
    j.at("current_batch").get_to(s.current_batch);
    j.at("completed_batch").get_to(s.completed_batch);
    j.at("started_at").get_to(s.started_at);
    j.at("next_batch_at").get_to(s.next_batch_at);
    j.at("finished_at").get_to(s.finished_at);
    j.at("next_order_seq").get_to(s.next_order_seq);
    j.at("next_update_seq").get_to(s.next_update_seq);
    j.at("end_reason").get_to(s.end_reason);
    j.at("halted").get_to(s.halted);
    if (j.contains("analysis")) {  // absent in states stored before analysis existed
      auto a = AnalysisProgress::from_json(j.at("analysis"));
      if (!a) return a.error();
      s.analysis = std::move(*a);
    }
    for (const auto& hj : slots) {
      auto hs = HostSlot::from_json(hj);
      if (!hs) return hs.error();
      HostSlot h = std::move(*hs);
      if (h.batch < -1 || h.batch >= static_cast<int>(s.batches.size())) {
        return make_error("state", "stored rollout state: host " + h.host_id + " has batch " + std::to_string(h.batch) +
                                       " out of range");
      }
      if (!batch_lists && h.batch >= 0) s.batches[static_cast<size_t>(h.batch)].push_back(h.host_id);
      s.hosts.push_back(std::move(h));
    }
    if (s.pending_means_skipped()) {
      for (auto& h : s.hosts)
        if (h.state == HostState::kPending) h.state = HostState::kSkipped;
    }
    if (s.current_batch < -1 || s.current_batch >= static_cast<int>(s.batches.size()) || s.completed_batch < -1 ||
        s.completed_batch > s.current_batch) {
      return make_error("state", "stored rollout state: batch indexes out of range");
    }
    for (const auto& b : s.batches) {
      for (const auto& id : b) {
        if (!s.find(id)) {
          return make_error("state", "stored rollout state: batch lists unknown host " + id);
        }
      }
    }
    return s;
  } catch (const json::exception& ex) {
    return make_error("state", std::string("stored rollout state is malformed: ") + ex.what());
  }
}

namespace {

std::atomic<bool> g_self_check{false};

// With self-checks on (the tests), what the machine keeps incrementally is checked against a
// fresh look after every step: its counts, and that every slot it did not list as touched is
// unchanged. A mismatch is a bug in this file: abort loudly.
void check_touched(const State& before, const StepResult& r) {
  if (!g_self_check || before.hosts.size() != r.state.hosts.size()) return;
  std::vector<bool> listed(r.state.hosts.size(), false);
  for (uint32_t i : r.touched) listed.at(i) = true;
  const bool derived_skip = r.state.pending_means_skipped();
  for (size_t i = 0; i < r.state.hosts.size(); ++i) {
    if (listed[i] || r.state.hosts[i] == before.hosts[i]) continue;
    // The one change a step may leave unwritten: pending -> skipped, which loading derives.
    HostSlot stored = before.hosts[i];
    if (derived_skip && stored.state == HostState::kPending) stored.state = HostState::kSkipped;
    if (!(r.state.hosts[i] == stored)) {
      std::fprintf(stderr, "rollout self-check: slot %zu (%s) changed but is not listed as touched\n", i,
                   r.state.hosts[i].host_id.c_str());
      std::abort();
    }
  }
}
void check_counts(const Machine& m) {
  if (g_self_check && !m.counts_exact()) {
    std::fprintf(stderr, "rollout self-check: incremental counts differ from a fresh count\n");
    std::abort();
  }
}

void check_deadline(const StepResult& r) {
  if (g_self_check && r.deadline != next_deadline(r.state)) {
    std::fprintf(stderr, "rollout self-check: step deadline %lld differs from next_deadline %lld\n",
                 static_cast<long long>(r.deadline), static_cast<long long>(next_deadline(r.state)));
    std::abort();
  }
}

void merge_touched(std::vector<uint32_t>& into, const std::vector<uint32_t>& more) {
  std::vector<uint32_t> out;
  out.reserve(into.size() + more.size());
  std::set_union(into.begin(), into.end(), more.begin(), more.end(), std::back_inserter(out));
  into.swap(out);
}

}  // namespace

void set_self_check(bool on) { g_self_check = on; }

StepResult step(const State& s, const Event& e, Millis now) {
  StepResult r{s, {}, Status::Ok(), {}};
  Machine m(r.state, now, r.actions);
  Status st = std::visit([&](const auto& ev) { return m.on(ev); }, e);
  if (!st.ok()) return StepResult{s, {}, st, {}, next_deadline(s)};
  m.settle();
  if (m.withdraw_unsent_updates()) m.settle();
  r.touched = m.touched();
  r.deadline = m.deadline();
  check_counts(m);
  check_touched(s, r);
  check_deadline(r);
  return r;
}

StepResult step_all(State s, const std::vector<Event>& events, Millis now, std::vector<Status>* errors) {
  const State before = g_self_check ? s : State{};  // only the self-check needs the original
  StepResult r{std::move(s), {}, Status::Ok(), {}};
  // One machine for a run of reports: its counts are built once, not once per report.
  std::optional<Machine> reports;
  bool have_deadline = false;  // r.deadline is that of r.state
  const auto end_reports = [&] {
    if (!reports) return;
    merge_touched(r.touched, reports->touched());
    r.deadline = reports->deadline();
    have_deadline = true;
    reports.reset();
  };
  for (const auto& e : events) {
    if (std::holds_alternative<EvReport>(e)) {
      // A report never fails (odd ones are recorded and ignored), so it may work in place.
      if (!reports) reports.emplace(r.state, now, r.actions);
      Status st = reports->on(std::get<EvReport>(e));
      if (st.ok()) reports->settle();
      check_counts(*reports);
      if (errors) errors->push_back(st);
      continue;
    }
    end_reports();
    StepResult one = step(r.state, e, now);
    if (errors) errors->push_back(one.error);
    if (!one.error.ok()) continue;
    const bool replaced = one.state.hosts.size() != r.state.hosts.size();
    r.state = std::move(one.state);
    for (auto& a : one.actions) r.actions.push_back(std::move(a));
    if (replaced) r.touched.clear();
    merge_touched(r.touched, one.touched);
    r.deadline = one.deadline;
    have_deadline = true;
  }
  end_reports();
  // An update ordered by an earlier event of this run and a stop decided by a later one: the
  // orders are withdrawn as step() withdraws its own (nothing has been sent yet).
  const bool stopped = r.state.halted || is_terminal(r.state.phase);
  if (stopped && std::any_of(r.actions.begin(), r.actions.end(), [](const Action& a) {
        const auto* o = std::get_if<ActOrder>(&a);
        return o && o->kind == OrderKind::kUpdate;
      })) {
    Machine m(r.state, now, r.actions);
    if (m.withdraw_unsent_updates()) m.settle();
    merge_touched(r.touched, m.touched());
    r.deadline = m.deadline();
    have_deadline = true;
    check_counts(m);
  }
  if (!have_deadline) r.deadline = next_deadline(r.state);
  check_touched(before, r);
  check_deadline(r);
  return r;
}

Millis next_deadline(const State& s) {
  if (is_terminal(s.phase) || s.hosts.empty()) return 0;
  Millis best = 0;
  for (const auto& h : s.hosts) take_host_deadline(s.plan, h, best);
  return with_rollout_deadlines(s, best);
}

}  // namespace gantry::rollout
