// Helpers for the rollout state machine tests: a driver that feeds events at a fake time.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "coordinator/rollout/planner.h"
#include "coordinator/rollout/state_machine.h"

namespace gantry::rollout::testing {

// Every rollout test runs with the machine's self-checks on (see set_self_check).
inline const bool kSelfCheckOn = (set_self_check(true), true);

// Hosts "web-1".."web-N" running `from`, optionally labelled zone=<zones[i % zones.size()]>.
inline std::vector<HostCandidate> make_hosts(int n, const std::vector<std::string>& zones = {},
                                             const std::string& from = "v1") {
  std::vector<HostCandidate> out;
  for (int i = 1; i <= n; ++i) {
    HostCandidate h;
    h.host_id = "web-" + std::to_string(i);
    h.labels["role"] = "web";
    if (!zones.empty()) h.labels["zone"] = zones[static_cast<size_t>(i - 1) % zones.size()];
    h.running_version = from;
    out.push_back(h);
  }
  return out;
}

inline std::vector<Amount> ramp(std::initializer_list<const char*> entries) {
  std::vector<Amount> out;
  for (const char* e : entries) out.push_back(*Amount::parse(e));
  return out;
}

// Feeds events to the machine with a clock that moves only when the test says so.
struct Driver {
  State s;
  Millis now = 1'000'000;
  std::vector<Action> acts;  // actions of the last accepted step
  Status last_error;

  StepResult go(const Event& e) {
    StepResult r = step(s, e, now);
    last_error = r.error;
    if (r.error.ok()) {
      s = r.state;
      acts = r.actions;
    } else {
      acts.clear();
    }
    return r;
  }

  void start(const Plan& plan, const std::vector<HostCandidate>& hosts, uint64_t id = 7) {
    auto r = go(EvStart{id, "web", "v2", plan, hosts});
    ASSERT_TRUE(r.error.ok()) << r.error.error().message;
  }

  // Reports on the host's current order; running version follows the outcome.
  void report(const std::string& host, Outcome outcome, const std::string& msg = "") {
    const HostSlot* h = s.find(host);
    ASSERT_NE(h, nullptr) << host;
    const bool rollback = h->state == HostState::kRollingBack;
    std::string running = outcome == Outcome::kSucceeded ? (rollback ? h->from_version : s.version)
                                                         : (rollback ? s.version : h->from_version);
    go(EvReport{host, h->order_id, outcome, running, msg});
    ASSERT_TRUE(last_error.ok());
  }

  void tick_to(Millis t) {
    now = t;
    go(EvTick{});
  }

  std::vector<ActOrder> orders(std::optional<OrderKind> kind = std::nullopt) const {
    std::vector<ActOrder> out;
    for (const auto& a : acts) {
      if (auto* o = std::get_if<ActOrder>(&a); o && (!kind || o->kind == *kind)) {
        out.push_back(*o);
      }
    }
    return out;
  }
  std::vector<std::string> ordered(OrderKind kind = OrderKind::kUpdate) const {
    std::vector<std::string> out;
    for (const auto& o : orders(kind)) out.push_back(o.host_id);
    return out;
  }
  std::vector<std::string> records() const {
    std::vector<std::string> out;
    for (const auto& a : acts) {
      if (auto* r = std::get_if<ActRecord>(&a)) out.push_back(r->message);
    }
    return out;
  }
  bool recorded(const std::string& needle) const {
    for (const auto& r : records()) {
      if (r.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  std::vector<SignalKind> broadcasts() const {
    std::vector<SignalKind> out;
    for (const auto& a : acts) {
      if (auto* b = std::get_if<ActBroadcast>(&a)) out.push_back(b->kind);
    }
    return out;
  }
  std::optional<Phase> finished() const {
    for (const auto& a : acts) {
      if (auto* f = std::get_if<ActFinished>(&a)) return f->phase;
    }
    return std::nullopt;
  }
  HostState state_of(const std::string& host) const { return s.find(host)->state; }
};

}  // namespace gantry::rollout::testing
