// Every read of a store as one JSON document (tests of the etcd store and of migrate): two
// stores that answer every read the same give the same document.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coordinator/store/store.h"

namespace gantry::store::testing {

// A read's rows (a range-for over *expected would outlive the temporary).
template <typename T>
T val(Expected<T> e) {
  EXPECT_TRUE(e.ok()) << e.error().message;
  return e.ok() ? std::move(*e) : T{};
}

// Every read of a store, as JSON: two stores that answer the same give the same document.
inline nlohmann::json everything(Store& s) {
  nlohmann::json j;
  for (const auto& h : val(s.hosts()))
    j["hosts"].push_back({h.host_id, h.labels, h.services, h.first_seen, h.last_seen});
  for (const auto& r : val(s.rollouts("", false, -1, true))) {
    j["rollouts"].push_back({r.id, r.service, r.version, r.kind, r.phase, r.created_by, r.reason, r.created_at,
                             r.finished_at, r.revision, r.state});
    for (const auto& x : val(s.results(r.id)))
      j["results"].push_back(
          {x.rollout_id, x.host_id, x.order_id, x.outcome, x.running_version, x.message, x.timings, x.at});
    for (const auto& t : val(s.timeline(r.id)))
      j["timeline"].push_back({t.rollout_id, t.host_id, t.seq, t.phase, t.at_ms});
    for (const auto& e : val(s.recent_events(r.id, 3))) j["recent"].push_back({e.id, e.message});
  }
  for (const auto& r : val(s.rollouts("", true, -1, false))) j["active"].push_back(r.id);
  for (const auto& r : val(s.latest_rollouts("", 4, false))) j["latest"].push_back(r.id);
  for (const auto& o : val(s.open_orders()))
    j["open"].push_back({o.order_id, o.rollout_id, o.host_id, o.body, o.acked, o.reported, o.created_at});
  for (const auto& e : val(s.events(0, 0, -1))) j["events"].push_back({e.id, e.rollout_id, e.at, e.message});
  for (const auto& d : val(s.desired()))
    j["desired"].push_back({d.service, d.version, d.selector, d.converge, d.plan, d.rollout_id, d.held, d.note});
  for (const auto& a : val(s.audit_log(-1))) j["audit"].push_back({a.id, a.at, a.who, a.command, a.target, a.decision});
  for (const auto& k : val(s.agent_keys())) j["agent_keys"].push_back({k.key, k.host_id, k.state, k.first_seen});
  for (const auto& k : val(s.operator_keys())) j["operator_keys"].push_back({k.key, k.name, k.role, k.state});
  return j;
}

}  // namespace gantry::store::testing
