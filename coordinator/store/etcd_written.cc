#include "coordinator/store/etcd_written.h"

#include <vector>

namespace gantry::store {

const OrderMeta* EtcdWritten::order(const std::string& id, const WrittenChanges& staged) const {
  if (auto it = staged.orders.find(id); it != staged.orders.end()) return &it->second;
  auto it = orders_.find(id);
  if (it == orders_.end()) return nullptr;
  // A rollout ended by this very write keeps no order (its orders are closed with the end).
  if (staged.ended.count(it->second.rollout_id)) return nullptr;
  return &it->second;
}

const RolloutRow* EtcdWritten::header(uint64_t id, const WrittenChanges& staged) const {
  if (auto it = staged.headers.find(id); it != staged.headers.end()) return &it->second;
  if (staged.ended.count(id)) return nullptr;
  auto it = headers_.find(id);
  return it == headers_.end() ? nullptr : &it->second;
}

bool EtcdWritten::unplanned(uint64_t id, const WrittenChanges& staged) const {
  if (staged.planned.count(id) || staged.ended.count(id)) return false;
  return staged.created.count(id) > 0 || unplanned_.count(id) > 0;
}

bool EtcdWritten::knows_all(uint64_t id, const WrittenChanges& staged) const {
  if (staged.ended.count(id)) return false;
  return staged.created.count(id) > 0 || all_.count(id) > 0;
}

void EtcdWritten::learn(const std::string& id, const OrderMeta& m) {
  orders_[id] = m;
  bound();
}

void EtcdWritten::learn(const RolloutRow& header) { headers_[header.id] = header; }

void EtcdWritten::keep(const WrittenChanges& c) {
  for (const auto& [id, m] : c.orders) orders_[id] = m;
  for (const auto& [id, h] : c.headers) headers_[id] = h;
  unplanned_.insert(c.created.begin(), c.created.end());
  all_.insert(c.created.begin(), c.created.end());
  for (uint64_t id : c.planned) unplanned_.erase(id);
  if (!c.ended.empty()) {
    std::vector<std::string> gone;
    for (const auto& [id, m] : orders_) {
      if (c.ended.count(m.rollout_id)) gone.push_back(id);
    }
    for (const auto& id : gone) orders_.erase(id);
    for (uint64_t id : c.ended) {
      headers_.erase(id);
      unplanned_.erase(id);
      all_.erase(id);
    }
  }
  bound();
}

void EtcdWritten::clear() {
  orders_.clear();
  headers_.clear();
  unplanned_.clear();
  all_.clear();
}

void EtcdWritten::bound() {
  if (orders_.size() > max_orders_) {
    orders_.clear();
    all_.clear();
  }
}

}  // namespace gantry::store
