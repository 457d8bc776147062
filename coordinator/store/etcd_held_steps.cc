// The etcd store's lazy steps held back (etcd_store.h, "Lazy steps"): a step that decides
// nothing costs SQLite no fsync; on etcd it would cost a transaction through raft. It is held
// in memory instead and written with the rollout's next durable step (one transaction per batch
// transition), by flush(), or before any other write or read of rollout data.
#include "coordinator/store/etcd_store.h"

#include "common/util/log.h"

namespace gantry::store {

namespace {

spdlog::logger* L() {
  static const auto l = log::get("store");
  return l.get();
}

size_t rows_of(const StepWrite& w) {
  return w.slots.size() + w.results.size() + w.timeline.size() + w.events.size() + w.acked.size() + 1;
}

}  // namespace

Status EtcdStore::hold(const StepWrite& w) {
  held_[w.rollout_id].push_back(w);
  held_rows_ += rows_of(w);
  if (held_rows_ < kHeldRows) return Status::Ok();
  if (auto s = flush_held(); s.ok()) return s;         // flush_held reloads the ids first when it must
  if (held_rows_ < kHeldRowsMax) return Status::Ok();  // kept, tried again with the next write
  // etcd has failed for long: this rollout's held reports are given up, and the caller restores
  // the rollout from the store (its orders are open there: resent, answered again).
  const auto it = held_.find(w.rollout_id);
  for (const auto& step : it->second) held_rows_ -= std::min(held_rows_, rows_of(step));
  held_.erase(it);
  return make_error("etcd", "save rollout step: " + std::to_string(kHeldRowsMax) +
                                " rows held back could not be written to etcd; the rollout's are dropped");
}

void EtcdStore::settle_unsure() {
  if (unsure_token_.empty()) return;
  // load_counters has read meta/write: its token says whether that write was applied.
  if (reload_counters_) return;
  const bool applied = guard_value_ == unsure_token_;
  unsure_token_.clear();
  if (!applied) {
    for (auto& w : unsure_) {
      held_rows_ += rows_of(w);
      auto& steps = held_[w.rollout_id];
      steps.insert(steps.begin(), std::move(w));  // oldest first; no newer step of a rollout precedes them
    }
  }
  unsure_.clear();
}

Status EtcdStore::flush_held() {
  if (held_.empty()) return Status::Ok();
  if (auto r = reload(); !r.ok()) return r;
  if (held_.empty()) return Status::Ok();
  EtcdBatch b;
  WrittenChanges staged;
  EtcdRowGroups groups;
  std::vector<StepWrite> steps;
  for (auto& [id, list] : held_) {
    for (auto& w : list) steps.push_back(std::move(w));
  }
  held_.clear();
  const size_t rows = held_rows_;
  held_rows_ = 0;
  for (const auto& w : steps) {
    if (auto s = add_step(b, staged, groups, w); !s.ok()) {
      counters_ = committed_;  // no id handed out is lost
      for (auto& back : steps) held_[back.rollout_id].push_back(std::move(back));
      held_rows_ = rows;
      return s;
    }
  }
  groups.put(b, keys_, counters_);
  auto r = commit(b, "write held-back rollout steps", staged);
  if (r) return Status::Ok();
  if (r.error().code == "deposed") return r.error();  // a deposed leader writes nothing more
  if (r.error().code == "etcd") {
    // Maybe applied: meta/write, read again before the next write, tells.
    unsure_ = std::move(steps);
    unsure_token_ = last_token_;
  } else {
    for (auto& back : steps) held_[back.rollout_id].push_back(std::move(back));
    held_rows_ = rows;
  }
  return r.error();
}

void EtcdStore::flush_held_for_read() {
  if (held_.empty()) return;
  if (auto s = flush_held(); !s.ok())
    L()->warn("etcd store: held-back rollout steps not written before a read: {}", s.error().message);
}

Status EtcdStore::flush() {
  std::lock_guard<std::mutex> lk(mu_);
  try {
    return flush_held();
  } catch (const std::exception& e) {
    return make_error("store", std::string("write held-back rollout steps: ") + e.what());
  }
}

}  // namespace gantry::store
