// What the etcd store itself wrote and still needs (store internals): the orders of running
// rollouts (their rollout, host, sequence number, whether open and acknowledged) and the headers
// of the rollouts it runs, so that a step (acks, reports, the next batch) writes without first
// reading back from etcd what this store just put there: a step is then one etcd round trip.
//
// Valid only while this store is etcd's one writer of those keys. It is: every write builds on
// the store's last one (WriteGuard, etcd_batch.h) and is fenced; a write that fails for any
// reason clears everything kept here (EtcdWritten::clear), and what is not known is read from
// etcd again (and kept: EtcdWritten::learn); a rollout not known to be unplanned is not. A write's changes are staged
// in a WrittenChanges and kept only once that write committed (EtcdWritten::keep).
//
// Bounded: a rollout's orders and header are dropped when it ends (or its orders are closed);
// past kMaxOrders (or the bound given) orders everything is dropped and read again when needed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "coordinator/store/store.h"

namespace gantry::store {

struct OrderMeta {
  uint64_t rollout_id = 0;
  std::string host_id;
  uint64_t seq = 0;    // the order's place in the store (OrderRecord::seq)
  bool open = false;   // its open-index key exists: not reported, not closed
  bool acked = false;  // acknowledged (the open-index key's value says so)
};

// One write's changes to what is kept, in the order they were made.
struct WrittenChanges {
  std::map<std::string, OrderMeta> orders;  // the order's state after the write
  std::map<uint64_t, RolloutRow> headers;   // the header after the write
  std::set<uint64_t> ended;                 // rollouts whose orders and header are dropped
  std::set<uint64_t> created;               // rollouts created by the write: no slot written yet
  std::set<uint64_t> planned;               // rollouts whose plan (first slots) the write holds
};

class EtcdWritten {
 public:
  static constexpr size_t kMaxOrders = 1'000'000;
  explicit EtcdWritten(size_t max_orders = kMaxOrders) : max_orders_(max_orders) {}

  // The order as `staged` leaves it, else as kept; nullptr when not known here.
  const OrderMeta* order(const std::string& id, const WrittenChanges& staged) const;
  // The header as `staged` leaves it, else as kept; nullptr when not known here.
  const RolloutRow* header(uint64_t id, const WrittenChanges& staged) const;

  // Whether the rollout was created by this store and no slot of it written since: its next
  // slots are its plan (etcd_row_groups.h). False when not known here (then written one by one).
  bool unplanned(uint64_t id, const WrittenChanges& staged) const;

  // Whether every order of the rollout is known here (it was created by this store, or its
  // orders were all read: learn_all): an order of it not known here is not stored.
  bool knows_all(uint64_t rollout_id, const WrittenChanges& staged) const;

  // What was just read from etcd: true of it whatever this store writes next.
  void learn(const std::string& id, const OrderMeta& m);
  // ... and this rollout's orders were all read.
  void learned_all(uint64_t rollout_id) { all_.insert(rollout_id); }
  void learn(const RolloutRow& header);

  // The write that staged `c` committed.
  void keep(const WrittenChanges& c);
  // A write failed or its outcome is unknown: nothing kept here is trusted any more.
  void clear();

  size_t orders() const { return orders_.size(); }

 private:
  void bound();

  size_t max_orders_;
  std::unordered_map<std::string, OrderMeta> orders_;
  std::map<uint64_t, RolloutRow> headers_;
  std::set<uint64_t> unplanned_;
  std::set<uint64_t> all_;  // rollouts whose every order is known here
};

}  // namespace gantry::store
