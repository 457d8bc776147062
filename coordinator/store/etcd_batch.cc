#include "coordinator/store/etcd_batch.h"

#include "common/util/text.h"

namespace gantry::store {

std::optional<std::optional<std::string>> EtcdBatch::pending(const std::string& key) const {
  auto it = ops_.find(key);
  if (it == ops_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> EtcdBatch::pending_under(const std::string& prefix) const {
  std::vector<std::string> out;
  for (auto it = ops_.lower_bound(prefix); it != ops_.end() && it->first.rfind(prefix, 0) == 0; ++it)
    out.push_back(it->first);
  return out;
}

void EtcdBatch::put(const std::string& key, std::string value) {
  for (const auto& q : prefixes_) {
    if (key.rfind(q, 0) == 0) return;
  }
  ops_[key] = std::move(value);
}

void EtcdBatch::del_prefix(const std::string& prefix) {
  for (const auto& k : pending_under(prefix)) ops_.erase(k);
  for (const auto& q : prefixes_) {
    if (prefix.rfind(q, 0) == 0) return;  // under a range already deleted
  }
  std::erase_if(prefixes_, [&](const std::string& q) { return q.rfind(prefix, 0) == 0; });
  prefixes_.push_back(prefix);
}

Expected<int64_t> EtcdBatch::commit(etcd::Client& client, const std::optional<Fence>& fence, const WriteGuard& guard,
                                    const char* what) const {
  using etcd::Compare;
  std::vector<Compare> compares;
  std::vector<etcd::Op> failure;
  compares.push_back({guard.key, Compare::Target::kMod, Compare::Result::kEqual, guard.revision, ""});
  failure.push_back(etcd::Op::get(guard.key, "", 1));
  if (fence) {
    compares.push_back({fence->key, Compare::Target::kCreate, Compare::Result::kEqual, fence->create_revision, ""});
    failure.push_back(etcd::Op::get(fence->key, "", 1));
  }
  for (const auto& k : absent_) {
    compares.push_back({k, Compare::Target::kVersion, Compare::Result::kEqual, 0, ""});
    failure.push_back(etcd::Op::get(k, "", 1));
  }
  std::vector<etcd::Op> ops;
  ops.reserve(ops_.size() + prefixes_.size() + 1);
  for (const auto& q : prefixes_) ops.push_back(etcd::Op::del(q, etcd::prefix_end(q)));
  for (const auto& [k, v] : ops_) ops.push_back(v ? etcd::Op::put(k, *v) : etcd::Op::del(k));
  ops.push_back(etcd::Op::put(guard.key, guard.token));
  auto r = client.txn(compares, ops, failure);
  if (!r) return make_error(r.error().code, std::string(what) + ": " + r.error().message);
  if (r->succeeded) return r->revision;
  auto got = [&](size_t i) -> const std::vector<etcd::KeyValue>& {
    static const std::vector<etcd::KeyValue> none;
    return r->gets.size() > i ? r->gets[i] : none;
  };
  // Applied by an earlier try of this same call: done.
  if (!got(0).empty() && got(0)[0].value == guard.token) return got(0)[0].mod_revision;
  size_t i = 1;
  if (fence) {
    const int64_t now = got(i).empty() ? 0 : got(i)[0].create_revision;
    if (now != fence->create_revision) {
      return make_error("deposed", std::string(what) + ": not written: the leadership key " + safe_text(fence->key) +
                                       " was created at revision " + std::to_string(now) + ", not " +
                                       std::to_string(fence->create_revision) +
                                       " (this coordinator is no longer the leader)");
    }
    ++i;
  }
  for (const auto& k : absent_) {
    if (!got(i).empty()) return make_error("exists", std::string(what) + ": " + safe_text(k) + " already exists");
    ++i;
  }
  return make_error("conflict", std::string(what) + ": not written: the store was written by someone else since (" +
                                    safe_text(guard.key) + " moved on)");
}

}  // namespace gantry::store
