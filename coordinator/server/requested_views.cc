#include "coordinator/server/requested_views.h"

#include <chrono>
#include <vector>

namespace gantry::coordinator {

RequestedViews::RequestedViews(const Clock& clock, Builder build) : clock_(clock), build_(std::move(build)) {}

std::shared_ptr<const BuiltView> RequestedViews::get(const std::string& key) {
  const Millis asked = clock_.now_ms();
  const auto fresh = [&]() -> std::shared_ptr<const BuiltView> {
    auto it = kept_.find(key);
    return it != kept_.end() && asked - it->second->built_at < kMaxAgeMs ? it->second : nullptr;
  };
  std::unique_lock<std::mutex> lk(mu_);
  if (auto v = fresh()) return v;
  if (!wanted_.count(key)) {
    if (wanted_.size() >= kMaxWanted) return nullptr;
    wanted_.insert(key);
  }
  std::shared_ptr<const BuiltView> got;
  cv_.wait_for(lk, std::chrono::milliseconds(kWaitMs), [&] { return (got = fresh()) != nullptr; });
  return got;
}

void RequestedViews::on_loop_turn() {
  std::vector<std::string> keys;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (wanted_.empty()) return;
    for (auto it = wanted_.begin(); it != wanted_.end() && keys.size() < kBuildsPerTurn;) {
      keys.push_back(*it);
      it = wanted_.erase(it);
    }
  }
  std::vector<std::shared_ptr<const BuiltView>> built;
  for (const auto& k : keys) {
    auto v = std::make_shared<BuiltView>(build_(k));
    v->built_at = clock_.now_ms();
    built.push_back(std::move(v));
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < keys.size(); ++i) kept_[keys[i]] = built[i];
    builds_ += keys.size();
    while (kept_.size() > kMaxKept) {  // the oldest go
      auto oldest = kept_.begin();
      for (auto it = kept_.begin(); it != kept_.end(); ++it)
        if (it->second->built_at < oldest->second->built_at) oldest = it;
      kept_.erase(oldest);
    }
  }
  cv_.notify_all();
}

uint64_t RequestedViews::builds() const {
  std::lock_guard<std::mutex> lk(mu_);
  return builds_;
}

}  // namespace gantry::coordinator
