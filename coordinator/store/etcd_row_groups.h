// The rows one etcd write adds in bulk, gathered over every step the write holds and put as
// groups (store internals; docs/HIGH_AVAILABILITY.md, "etcd key layout"): a rollout's new
// orders under their first sequence number, its events under their first event's id, its
// results and its timeline entries under the next group numbers, and its plan (the first step's
// slots) under each run's first position; at most etcd_codec::kMaxGroupRows rows per key. One
// key per group instead of one per row: a batch transition of a 100-host batch writes four keys
// for its orders, results, events and timeline entries where it wrote four hundred, and a
// 10,000-host rollout's first step forty plan keys where it wrote ten thousand slots.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "coordinator/store/etcd_batch.h"
#include "coordinator/store/etcd_codec.h"
#include "coordinator/store/etcd_keys.h"
#include "coordinator/store/store.h"

namespace gantry::store {

class EtcdRowGroups {
 public:
  // Sequence numbers and ids already handed out.
  void add(etcd_codec::OrderRecord order);
  void add(etcd_codec::ResultRecord result);
  void add(EventRow row);
  void add(TimelineRow row);
  // A slot of the rollout's plan (its text as the state machine wrote it).
  void add_plan_slot(uint64_t rollout_id, uint32_t pos, std::string text);
  bool empty() const {
    return orders_.empty() && results_.empty() && events_.empty() && timeline_.empty() && plans_.empty();
  }

  // Puts the groups into `b`; result and timeline groups take their numbers from
  // `counters.group`.
  void put(EtcdBatch& b, const etcd_keys::Layout& keys, etcd_codec::Counters& counters) const;

 private:
  std::map<uint64_t, std::vector<etcd_codec::OrderRecord>> orders_;    // by rollout, in the order added
  std::map<uint64_t, std::vector<etcd_codec::ResultRecord>> results_;  // by rollout, in the order added
  std::map<uint64_t, std::vector<EventRow>> events_;                   // by rollout, in the order added
  std::map<uint64_t, std::vector<TimelineRow>> timeline_;              // by rollout, in the order added
  std::map<uint64_t, std::map<uint32_t, std::string>> plans_;
};

}  // namespace gantry::store
