// Where the etcd store keeps each row (docs/HIGH_AVAILABILITY.md, "etcd key layout"): small
// keys under one prefix (default "/gantry/"), one per row, except rows one transaction adds
// together in bulk (orders, results, events, timeline entries, a rollout's first slots): one
// key per group of them. Ids are zero-padded decimals (20 digits for uint64 ids, 10 for a slot position) so that
// etcd's byte order of keys is their numeric order; names (host ids, services, order ids, keys)
// are escaped so that a '/' in a name cannot reach another row: every byte outside
// [A-Za-z0-9._-] becomes %XX. Reads sort by the values' fields where SQLite sorts by a name,
// since escaping changes the byte order of names.
#pragma once

#include <cstdint>
#include <string>

namespace gantry::store::etcd_keys {

std::string escape(const std::string& name);
std::string id20(uint64_t id);
std::string pos10(uint32_t pos);

// All of them relative to the store's prefix P.
struct Layout {
  std::string p;  // the prefix, ending in '/'

  std::string counters() const { return p + "meta/counters"; }    // ids handed out so far (JSON)
  std::string compacted() const { return p + "meta/compacted"; }  // revision of the last checkpoint()
  std::string write_guard() const { return p + "meta/write"; }    // the last write's token (WriteGuard)
  std::string host(const std::string& id) const { return p + "host/" + escape(id); }
  std::string hosts() const { return p + "host/"; }
  std::string release(const std::string& service, const std::string& version) const {
    return p + "release/" + escape(service) + "/" + escape(version);
  }
  // A copy of the release under its sha256, in upload order (releases are never rewritten).
  std::string release_sha(const std::string& sha, uint64_t seq) const { return release_shas(sha) + id20(seq); }
  std::string release_shas(const std::string& sha) const { return p + "release_sha/" + escape(sha) + "/"; }
  std::string rollout(uint64_t id) const { return rollouts() + id20(id); }
  std::string rollouts() const { return p + "rollout/"; }
  std::string active(uint64_t id) const { return actives() + id20(id); }  // "" while running/paused/rolling back
  std::string actives() const { return p + "rollout_active/"; }
  std::string by_service(const std::string& service, uint64_t id) const { return by_services(service) + id20(id); }
  std::string by_services(const std::string& service) const { return p + "rollout_service/" + escape(service) + "/"; }
  std::string revision(const std::string& service) const { return p + "revision/" + escape(service); }
  std::string slot(uint64_t rollout, uint32_t pos) const { return slots(rollout) + pos10(pos); }
  std::string slots(uint64_t rollout) const { return p + "slot/" + id20(rollout) + "/"; }
  // A rollout's first slots, written once by its first step in groups of up to 256 (JSON
  // array, the first at `first`); a slot/ key, once written, is the slot's text from then on.
  std::string slot_plan(uint64_t rollout, uint32_t first) const { return slot_plans(rollout) + pos10(first); }
  std::string slot_plans(uint64_t rollout) const { return p + "slot_plan/" + id20(rollout) + "/"; }
  // A group of orders of a rollout still running (JSON array), under its first order's sequence
  // number: each open until a result for it exists; every group of a rollout is deleted (with the
  // acknowledgement marks) when the rollout ends or its orders are closed.
  std::string order(uint64_t rollout, uint64_t first_seq) const { return orders(rollout) + id20(first_seq); }
  std::string orders(uint64_t rollout) const { return orders() + id20(rollout) + "/"; }
  std::string orders() const { return p + "order/"; }
  std::string acked(uint64_t rollout, const std::string& id) const { return ackeds(rollout) + escape(id); }
  std::string ackeds(uint64_t rollout) const { return ackeds() + id20(rollout) + "/"; }
  std::string ackeds() const { return p + "order_acked/"; }
  // A group of results (JSON array), numbered in write order.
  std::string result(uint64_t rollout, uint64_t group) const { return results(rollout) + id20(group); }
  std::string results(uint64_t rollout) const { return p + "result/" + id20(rollout) + "/"; }
  // A group of timeline entries written together (JSON array), numbered in write order (one
  // count with the results' groups).
  std::string timeline(uint64_t rollout, uint64_t group) const { return timelines(rollout) + id20(group); }
  std::string timelines(uint64_t rollout) const { return p + "timeline/" + id20(rollout) + "/"; }
  // A group of events written together (JSON array), under its first event's id.
  std::string event(uint64_t rollout, uint64_t first_id) const { return events(rollout) + id20(first_id); }
  std::string events(uint64_t rollout) const { return events() + id20(rollout) + "/"; }
  std::string events() const { return p + "event/"; }
  std::string audit(uint64_t id) const { return audits() + id20(id); }
  std::string audits() const { return p + "audit/"; }
  std::string desired(const std::string& service) const { return desireds() + escape(service); }
  std::string desireds() const { return p + "desired/"; }
  std::string agent_key(const std::string& key) const { return agent_keys() + escape(key); }
  std::string agent_keys() const { return p + "agent_key/"; }
  std::string operator_key(const std::string& key) const { return operator_keys() + escape(key); }
  std::string operator_keys() const { return p + "operator_key/"; }
};

}  // namespace gantry::store::etcd_keys
