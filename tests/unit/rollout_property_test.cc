// Randomized event sequences over random plans; invariants checked after every step.
// Seeds are fixed so a failure reproduces: rerun with the printed seed.
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "coordinator/rollout/planner.h"
#include "coordinator/rollout/state_machine.h"

using namespace gantry;
using namespace gantry::rollout;

namespace {

bool in_flight_update(const HostSlot& h) {
  return h.state == HostState::kOrdered || (h.state == HostState::kUnknown && !h.unknown_counts);
}
bool counts_failed(const HostSlot& h) {
  return h.state == HostState::kFailed || (h.state == HostState::kUnknown && h.unknown_counts);
}
bool outstanding(const HostSlot& h) {
  return h.state == HostState::kOrdered || h.state == HostState::kUnknown || h.state == HostState::kRollingBack;
}

// The budget, computed independently of the machine from the plan's words.
bool budget_exceeded(const State& s) {
  uint32_t failed = 0;
  for (const auto& h : s.hosts) failed += counts_failed(h);
  if (failed > s.plan.max_failures.resolve(static_cast<uint32_t>(s.hosts.size()), false)) return true;
  if (s.plan.max_failures_per_batch) {
    for (size_t b = 0; b < s.batches.size(); ++b) {
      uint32_t bf = 0;
      for (const auto& h : s.hosts) bf += h.batch == static_cast<int>(b) && counts_failed(h);
      if (bf > s.plan.max_failures_per_batch->resolve(static_cast<uint32_t>(s.batches[b].size()), false)) {
        return true;
      }
    }
  }
  return false;
}

struct LastReport {
  std::string order_id;
  bool rollback = false;
  bool ok = false;
};

class Sequence {
 public:
  explicit Sequence(uint32_t seed) : rng_(seed) {}

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  Amount amount(int max_count, int min_pct, int max_pct) {
    if (chance(0.5)) return Amount{false, static_cast<uint32_t>(pick(0, max_count))};
    return Amount{true, static_cast<uint32_t>(pick(min_pct, max_pct))};
  }

  void setup() {
    const int n = pick(1, 30);
    const int zones = pick(1, 4);
    for (int i = 0; i < n; ++i) {
      HostCandidate h;
      h.host_id = "h" + std::to_string(i);
      if (chance(0.95)) h.labels["zone"] = "z" + std::to_string(pick(0, zones - 1));
      h.running_version = chance(0.9) ? "v1" : "";
      h.online = chance(0.92);
      hosts_.push_back(h);
    }
    Plan& p = plan_;
    p.batches.clear();
    for (int i = pick(1, 4); i > 0; --i) {
      Amount a = amount(5, 1, 100);
      if (a.value == 0) a.value = 1;
      p.batches.push_back(a);
    }
    p.max_failures = amount(3, 0, 50);
    if (chance(0.4)) p.max_failures_per_batch = amount(2, 0, 60);
    p.unknown_hosts = chance(0.5) ? UnknownHosts::kFail : UnknownHosts::kWait;
    p.unknown_wait_ms = pick(0, 5'000);
    p.host_timeout_ms = chance(0.2) ? 0 : pick(1'000, 20'000);
    p.progress_deadline_ms = chance(0.6) ? 0 : pick(10'000, 200'000);
    p.batch_delay_ms = chance(0.5) ? 0 : pick(0, 3'000);
    if (chance(0.6)) {
      p.domain_label = "zone";
      if (chance(0.8)) {
        p.max_per_domain = chance(0.5) ? Amount{false, static_cast<uint32_t>(pick(1, 3))}
                                       : Amount{true, static_cast<uint32_t>(pick(10, 100))};
      }
    }
    p.auto_rollback = chance(0.7);
    p.rollback_batch_size = static_cast<uint32_t>(pick(0, 3));
    auto sched = make_schedule(p, hosts_);
    ASSERT_TRUE(sched.ok()) << sched.error().message;
    for (size_t b = 0; b < sched->batches.size(); ++b) {
      if (chance(0.25)) p.pause_after.push_back(static_cast<uint32_t>(b));
    }
    for (const auto& h : hosts_) {
      if (!p.domain_label.empty()) {
        auto it = h.labels.find("zone");
        domain_size_[it == h.labels.end() ? "" : it->second]++;
      }
    }
  }

  // One event chosen at random, fitting the current state most of the time.
  Event next_event(bool* same_time) {
    *same_time = false;
    std::vector<const HostSlot*> out, any;
    for (const auto& h : s_.hosts) {
      if (outstanding(h)) out.push_back(&h);
      any.push_back(&h);
    }
    const int r = pick(0, 99);
    if (r < 40 && !out.empty()) {
      const HostSlot& h = *out[static_cast<size_t>(pick(0, static_cast<int>(out.size()) - 1))];
      const int o = pick(0, 9);
      const Outcome outcome = o < 7 ? Outcome::kSucceeded : o < 9 ? Outcome::kFailedReverted : Outcome::kFailed;
      return EvReport{h.host_id, h.order_id, outcome, outcome == Outcome::kSucceeded ? "v2" : "v1", "m"};
    }
    if (r < 46) {  // stale or duplicate: must change nothing
      const HostSlot& h = *any[static_cast<size_t>(pick(0, static_cast<int>(any.size()) - 1))];
      *same_time = true;
      // (Not a skipped host's withdrawn order: a report of it is news, applied.)
      const bool withdrawn = h.state == HostState::kSkipped && !h.order_id.empty();
      std::string id = (!outstanding(h) && !withdrawn && !h.order_id.empty() && chance(0.5))
                           ? h.order_id
                           : "r" + std::to_string(s_.id) + "-" + std::to_string(pick(0, 3) + 100000);
      return EvReport{h.host_id, id, chance(0.5) ? Outcome::kSucceeded : Outcome::kFailed, "v2", "stale"};
    }
    const std::string host = any[static_cast<size_t>(pick(0, static_cast<int>(any.size()) - 1))]->host_id;
    if (r < 56) return EvHostLost{host};
    if (r < 66) {
      const int v = pick(0, 2);
      // Sometimes the host says it is working on its current order (its hello's order_id).
      const HostSlot* h = s_.find(host);
      std::string in_progress = h && chance(0.3) ? h->order_id : "";
      return EvHostBack{host, v == 0 ? "v2" : v == 1 ? "v1" : "", in_progress};
    }
    if (r < 86) return EvTick{};
    if (r < 89) return EvPause{};
    if (r < 92) return EvResume{};
    if (r < 96) return EvPromote{};
    if (r < 98) return EvRollback{};
    return EvAbort{};
  }

  void check(const State& prev, const Event& e, const StepResult& r, Millis now) {
    const State& s = r.state;
    SCOPED_TRACE("event index " + std::to_string(e.index()) + " at " + std::to_string(now) + " phase " +
                 phase_name(s.phase));
    if (!r.error.ok()) {
      ASSERT_EQ(r.state, prev) << "a refused event changed the state";
      ASSERT_TRUE(r.actions.empty());
      return;
    }
    // Counts add up.
    const Counts c = count(s);
    ASSERT_EQ(c.pending + c.ordered + c.healthy + c.failed + c.unknown + c.rolling_back + c.rolled_back +
                  c.rollback_failed + c.skipped,
              hosts_.size());
    // In flight: within the current batch's size and max_per_domain.
    uint32_t flying = 0;
    std::map<std::string, uint32_t> per_domain;
    for (const auto& h : s.hosts) {
      if (!in_flight_update(h)) continue;
      ++flying;
      ++per_domain[h.domain];
      ASSERT_EQ(h.batch, s.current_batch) << h.host_id << " in flight outside the current batch";
    }
    if (s.current_batch >= 0) {
      ASSERT_LE(flying, s.batches[static_cast<size_t>(s.current_batch)].size());
    } else {
      ASSERT_EQ(flying, 0u);
    }
    if (!plan_.domain_label.empty()) {
      for (const auto& [d, n] : per_domain) {
        ASSERT_LE(n, domain_cap(plan_, domain_size_[d])) << "domain " << d;
      }
    }
    // Pending hosts only after the current batch; none at all once finished.
    for (const auto& h : s.hosts) {
      if (h.state == HostState::kPending) {
        ASSERT_GT(h.batch, s.current_batch);
        ASSERT_FALSE(is_terminal(s.phase));
        ASSERT_FALSE(s.halted);
      }
    }
    // Budget: no update ordered once exceeded; an exceeded running rollout is stopping.
    uint32_t updates = 0;
    for (const auto& a : r.actions) {
      if (auto* o = std::get_if<ActOrder>(&a)) {
        ASSERT_TRUE(order_ids_.insert(o->order_id).second) << "reused order id " << o->order_id;
        ASSERT_EQ(o->order_id.rfind("r" + std::to_string(s.id) + "-", 0), 0u);
        const HostSlot* h = s.find(o->host_id);
        ASSERT_NE(h, nullptr);
        ASSERT_EQ(h->order_id, o->order_id) << "ordered but not remembered";
        if (o->kind == OrderKind::kUpdate) {
          ++updates;
          ASSERT_EQ(o->version, s.version);
        } else {
          ASSERT_EQ(o->kind, OrderKind::kRollback);
          ASSERT_EQ(o->version, h->from_version);
          ASSERT_FALSE(o->version.empty());
        }
      }
    }
    if (budget_exceeded(prev) || prev.halted || is_terminal(prev.phase)) {
      ASSERT_EQ(updates, 0u) << "update ordered past the failure budget";
    }
    // Not even the step that decides to stop orders an update (its orders are withdrawn).
    if (s.halted || is_terminal(s.phase)) {
      ASSERT_EQ(updates, 0u) << "update ordered by the step that stopped the rollout";
    }
    // The number of hosts that start the new release after the stop decision is 0: no new
    // update order (above), and no host put back in flight (its order resent) unless it says it
    // is already working on that order.
    if (prev.halted || is_terminal(prev.phase)) {
      for (const auto& h : s.hosts) {
        const HostSlot* before = prev.find(h.host_id);
        if (h.state != HostState::kOrdered || before->state == HostState::kOrdered) continue;
        const auto* back = std::get_if<EvHostBack>(&e);
        // Allowed only for a host that says it works on that order, or already runs the target
        // (it ran the order while away; in flight again only until its report comes).
        const bool said_in_progress = back && back->host_id == h.host_id && back->order_in_progress == h.order_id;
        const bool on_target = back && back->host_id == h.host_id && back->running_version == s.version;
        if (!said_in_progress && !on_target) ++started_after_stop_;
        ASSERT_TRUE(said_in_progress || on_target)
            << h.host_id << " put in flight after the stop without its order in progress";
      }
    }
    if (!is_terminal(s.phase) && budget_exceeded(s) && s.current_batch >= 0) {
      ASSERT_TRUE(s.halted) << "budget exceeded without stopping";
    }
    if (s.phase == Phase::kRollingBack) {
      ASSERT_TRUE(s.halted);
    }
    // Terminal stays terminal, except an operator rollback of a failed or aborted rollout.
    if (is_terminal(prev.phase) && s.phase != prev.phase) {
      ASSERT_TRUE(std::holds_alternative<EvRollback>(e));
      ASSERT_TRUE(prev.phase == Phase::kFailed || prev.phase == Phase::kAborted);
    }
    // ActFinished exactly when a terminal phase is reached.
    int finished = 0;
    for (const auto& a : r.actions) {
      if (auto* f = std::get_if<ActFinished>(&a)) {
        ++finished;
        ASSERT_EQ(f->phase, s.phase);
      }
    }
    const bool reached = is_terminal(s.phase) && (!is_terminal(prev.phase) || prev.phase != s.phase);
    ASSERT_EQ(finished, reached ? 1 : 0);
    if (s.phase == Phase::kSucceeded) {
      for (const auto& h : s.hosts) ASSERT_FALSE(in_flight_update(h));
    }
    // Every host's state agrees with the last report it gave for its current order.
    for (const auto& h : s.hosts) {
      auto it = last_.find(h.host_id);
      if (it == last_.end() || it->second.order_id != h.order_id) continue;
      const LastReport& lr = it->second;
      HostState want = lr.rollback ? (lr.ok ? HostState::kRolledBack : HostState::kRollbackFailed)
                                   : (lr.ok ? HostState::kHealthy : HostState::kFailed);
      if (want == HostState::kHealthy && h.state == HostState::kRollbackFailed && h.from_version.empty()) {
        continue;  // healthy on the target with nothing to roll back to
      }
      ASSERT_EQ(h.state, want) << h.host_id << " disagrees with its last report";
    }
    // Deadlines: everything due by now has been handled.
    const Millis nd = next_deadline(s);
    ASSERT_TRUE(nd == 0 || nd > now) << "deadline " << nd << " left behind at " << now;
    if (is_terminal(s.phase)) {
      ASSERT_EQ(nd, 0);
    }
    // Persistence: the round trip is exact.
    if (++steps_ % 4 == 0 || is_terminal(s.phase)) {
      auto back = State::from_json(s.to_json());
      ASSERT_TRUE(back.ok()) << back.error().message;
      ASSERT_EQ(*back, s);
      ASSERT_EQ(back->to_json(), s.to_json());
    }
  }

  void run() {
    ASSERT_NO_FATAL_FAILURE(setup());
    auto r0 = step(State{}, EvStart{42, "svc", "v2", plan_, hosts_}, now_);
    ASSERT_TRUE(r0.error.ok()) << r0.error.error().message;
    ASSERT_NO_FATAL_FAILURE(check(State{}, EvStart{}, r0, now_));
    s_ = r0.state;
    settled_at_ = now_;
    int after_end = 0;
    for (int i = 0; i < 160 && after_end < 8; ++i) {
      bool same_time = false;
      Event e = next_event(&same_time);
      if (!same_time) {
        if (std::holds_alternative<EvTick>(e) && chance(0.5) && next_deadline(s_) > 0) {
          now_ = std::max(now_, next_deadline(s_));
        } else {
          now_ += pick(0, std::holds_alternative<EvTick>(e) ? 4'000 : 400);
        }
      }
      const State prev = s_;
      StepResult r = step(prev, e, now_);
      if (auto* rep = std::get_if<EvReport>(&e); rep && same_time && settled_at_ == now_) {
        ASSERT_TRUE(r.error.ok());
        ASSERT_EQ(r.state, prev) << "a stale or duplicate report changed the state";
      }
      if (auto* rep = std::get_if<EvReport>(&e); rep && !same_time) {
        const HostSlot* h = prev.find(rep->host_id);
        last_[rep->host_id] = {rep->order_id, h->state == HostState::kRollingBack, rep->outcome == Outcome::kSucceeded};
      }
      ASSERT_NO_FATAL_FAILURE(check(prev, e, r, now_));
      if (r.error.ok()) {
        s_ = r.state;
        settled_at_ = now_;
      }
      if (is_terminal(s_.phase)) ++after_end;
    }
  }

  const State& state() const { return s_; }
  int started_after_stop() const { return started_after_stop_; }

 private:
  std::mt19937 rng_;
  std::vector<HostCandidate> hosts_;
  Plan plan_;
  std::map<std::string, uint32_t> domain_size_;
  State s_;
  Millis now_ = 5'000'000;
  Millis settled_at_ = 0;  // the time of the last accepted step
  std::set<std::string> order_ids_;
  std::map<std::string, LastReport> last_;
  uint64_t steps_ = 0;
  int started_after_stop_ = 0;
};

}  // namespace

TEST(RolloutProperty, RandomSequencesKeepEveryInvariant) {
  constexpr uint32_t kRuns = 2000;
  std::map<Phase, int> endings;
  int started_after_stop = 0;
  for (uint32_t seed = 1; seed <= kRuns; ++seed) {
    Sequence run(seed);
    run.run();
    started_after_stop += run.started_after_stop();
    if (::testing::Test::HasFatalFailure() || ::testing::Test::HasNonfatalFailure()) {
      FAIL() << "invariant broken with seed " << seed << " (rerun: construct Sequence(" << seed
             << ") and step through)";
    }
    endings[run.state().phase]++;
  }
  // The generator must actually reach every ending, or the test proves little.
  for (Phase p : {Phase::kSucceeded, Phase::kFailed, Phase::kRolledBack, Phase::kAborted}) {
    EXPECT_GT(endings[p], 10) << phase_name(p);
  }
  for (const auto& [p, n] : endings) std::cout << phase_name(p) << ": " << n << "\n";
  EXPECT_EQ(started_after_stop, 0) << "hosts that started the new release after the stop decision";
}
