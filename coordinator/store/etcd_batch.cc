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

Expected<int64_t> EtcdBatch::commit(etcd::Client& client, const std::optional<Fence>& fence, const char* what) const {
  using etcd::Compare;
  std::vector<Compare> compares;
  std::vector<etcd::Op> failure;
  if (fence) {
    compares.push_back({fence->key, Compare::Target::kCreate, Compare::Result::kEqual, fence->create_revision, ""});
    failure.push_back(etcd::Op::get(fence->key, "", 1));
  }
  for (const auto& k : absent_) {
    compares.push_back({k, Compare::Target::kVersion, Compare::Result::kEqual, 0, ""});
    failure.push_back(etcd::Op::get(k, "", 1));
  }
  std::vector<etcd::Op> ops;
  ops.reserve(ops_.size());
  for (const auto& [k, v] : ops_) ops.push_back(v ? etcd::Op::put(k, *v) : etcd::Op::del(k));
  auto r = client.txn(compares, ops, failure);
  if (!r) return make_error(r.error().code, std::string(what) + ": " + r.error().message);
  if (r->succeeded) return r->revision;
  size_t i = 0;
  if (fence) {
    const auto& got = r->gets.size() > i ? r->gets[i] : std::vector<etcd::KeyValue>{};
    const int64_t now = got.empty() ? 0 : got[0].create_revision;
    if (now != fence->create_revision) {
      return make_error("deposed", std::string(what) + ": not written: the leadership key " + safe_text(fence->key) +
                                       " was created at revision " + std::to_string(now) + ", not " +
                                       std::to_string(fence->create_revision) +
                                       " (this coordinator is no longer the leader)");
    }
    ++i;
  }
  for (const auto& k : absent_) {
    const auto& got = r->gets.size() > i ? r->gets[i] : std::vector<etcd::KeyValue>{};
    if (!got.empty()) return make_error("exists", std::string(what) + ": " + safe_text(k) + " already exists");
    ++i;
  }
  // The compares failed but every one holds when read afterwards: something changed in between.
  return make_error("etcd", std::string(what) + ": the transaction's conditions failed; try again");
}

}  // namespace gantry::store
