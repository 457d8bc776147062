#include "coordinator/store/etcd_row_groups.h"

#include <algorithm>

namespace gantry::store {

void EtcdRowGroups::add(etcd_codec::OrderRecord order) {
  const uint64_t rollout = order.row.rollout_id;
  orders_[rollout].push_back(std::move(order));
}

void EtcdRowGroups::add(etcd_codec::ResultRecord result) {
  const uint64_t rollout = result.row.rollout_id;
  results_[rollout].push_back(std::move(result));
}

void EtcdRowGroups::add(EventRow row) {
  const uint64_t rollout = row.rollout_id;
  events_[rollout].push_back(std::move(row));
}

void EtcdRowGroups::add(TimelineRow row) {
  const uint64_t rollout = row.rollout_id;
  timeline_[rollout].push_back(std::move(row));
}

void EtcdRowGroups::add_plan_slot(uint64_t rollout_id, uint32_t pos, std::string text) {
  plans_[rollout_id][pos] = std::move(text);
}

namespace {

// Rows [i, i + kMaxGroupRows) of `rows`.
template <typename T>
std::vector<T> chunk(const std::vector<T>& rows, size_t i) {
  const size_t end = std::min(rows.size(), i + etcd_codec::kMaxGroupRows);
  return std::vector<T>(rows.begin() + static_cast<std::ptrdiff_t>(i), rows.begin() + static_cast<std::ptrdiff_t>(end));
}

}  // namespace

void EtcdRowGroups::put(EtcdBatch& b, const etcd_keys::Layout& keys, etcd_codec::Counters& counters) const {
  constexpr size_t kMax = etcd_codec::kMaxGroupRows;
  for (const auto& [rollout, rows] : orders_) {
    for (size_t i = 0; i < rows.size(); i += kMax) {
      auto group = chunk(rows, i);
      b.put(keys.order(rollout, group.front().seq), etcd_codec::encode(group));
    }
  }
  for (const auto& [rollout, rows] : results_) {
    for (size_t i = 0; i < rows.size(); i += kMax)
      b.put(keys.result(rollout, ++counters.group), etcd_codec::encode(chunk(rows, i)));
  }
  for (const auto& [rollout, rows] : events_) {
    for (size_t i = 0; i < rows.size(); i += kMax) {
      auto group = chunk(rows, i);
      b.put(keys.event(rollout, static_cast<uint64_t>(group.front().id)), etcd_codec::encode(group));
    }
  }
  for (const auto& [rollout, rows] : timeline_) {
    for (size_t i = 0; i < rows.size(); i += kMax)
      b.put(keys.timeline(rollout, ++counters.group), etcd_codec::encode(chunk(rows, i)));
  }
  // A plan's runs of consecutive positions, each in groups of at most kMax.
  for (const auto& [plan_rollout, slots] : plans_) {
    const auto& rollout = plan_rollout;  // a lambda cannot capture a structured binding (clang 14)
    std::vector<std::string> run;
    uint32_t first = 0;
    auto flush = [&] {
      if (!run.empty()) b.put(keys.slot_plan(rollout, first), etcd_codec::encode_slot_plan(run));
      run.clear();
    };
    for (const auto& [pos, text] : slots) {
      if (!run.empty() && (run.size() == kMax || pos != first + run.size())) flush();
      if (run.empty()) first = pos;
      run.push_back(text);
    }
    flush();
  }
}

}  // namespace gantry::store
