// The etcd store's migration side (EtcdStore::import_*, empty, wipe): rows written with the ids
// they already have, for `gantry-coordinator migrate` (coordinator/store/migrate.h).
#include <algorithm>
#include <charconv>

#include "common/util/text.h"
#include "coordinator/store/etcd_store.h"

namespace gantry::store {

namespace {

bool is_active_phase(const std::string& p) { return p == "running" || p == "paused" || p == "rolling_back"; }

// The four ranges of a prefix that hold rows: everything but <p>copies/ (which coordinator holds
// which artifact: ha/etcd_artifact_copies.h), <p>leader and <p>members/ (in key order).
std::vector<std::pair<std::string, std::string>> row_ranges(const std::string& p) {
  const std::string copies = p + "copies/";
  const std::string leader = p + "leader";
  const std::string members = p + "members/";
  return {{p, copies},
          {etcd::prefix_end(copies), leader},
          {leader + std::string(1, '\0'), members},
          {etcd::prefix_end(members), etcd::prefix_end(p)}};
}

}  // namespace

Status EtcdStore::import_rollout(const RolloutRow& r) {
  std::lock_guard<std::mutex> lk(mu_);
  try {
    if (auto ready = ready_to_write(); !ready.ok()) return ready;
    RolloutRow header = r;
    nlohmann::json hosts;
    if (header.state.is_object() && header.state.contains("hosts") && header.state["hosts"].is_array()) {
      hosts = std::move(header.state["hosts"]);
      header.state.erase("hosts");
    }
    // The slots first, in transactions of 1,000; the header (which makes the rollout visible)
    // last, with its indexes.
    if (hosts.is_array()) {
      for (size_t i = 0; i < hosts.size(); i += 1000) {
        EtcdBatch b;
        for (size_t j = i; j < std::min(hosts.size(), i + 1000); ++j)
          b.put(keys_.slot(r.id, static_cast<uint32_t>(j)), hosts[j].dump());
        auto w = commit(b, "import rollout slots");
        if (!w) return w.error();
      }
    }
    EtcdBatch b;
    b.put(keys_.rollout(r.id), etcd_codec::encode(header));
    b.put(keys_.by_service(r.service, r.id), "");
    if (is_active_phase(r.phase)) b.put(keys_.active(r.id), "");
    if (r.revision > 0) {
      auto last = get_one(keys_.revision(r.service));
      if (!last) return last.error();
      int64_t n = 0;
      if (*last) std::from_chars((*last)->value.data(), (*last)->value.data() + (*last)->value.size(), n);
      if (r.revision > n) b.put(keys_.revision(r.service), std::to_string(r.revision));
    }
    counters_.rollout = std::max(counters_.rollout, r.id);
    auto w = commit(b, "import rollout");
    if (!w) return w.error();
    return Status::Ok();
  } catch (const std::exception& e) {
    return make_error("store", std::string("import rollout ") + std::to_string(r.id) + ": " + e.what());
  }
}

Status EtcdStore::import_events(const std::vector<EventRow>& rows, size_t chunk) {
  std::lock_guard<std::mutex> lk(mu_);
  try {
    for (size_t i = 0; i < rows.size(); i += chunk) {
      EtcdBatch b;
      EtcdRowGroups groups;
      for (size_t j = i; j < std::min(rows.size(), i + chunk); ++j) {
        const auto& e = rows[j];
        if (e.id <= 0) return make_error("store", "import events: event id " + std::to_string(e.id));
        groups.add(e);
        counters_.event = std::max(counters_.event, static_cast<uint64_t>(e.id));
      }
      groups.put(b, keys_, counters_);
      auto w = commit(b, "import events");
      if (!w) return w.error();
    }
    return Status::Ok();
  } catch (const std::exception& e) {
    return make_error("store", std::string("import events: ") + e.what());
  }
}

Status EtcdStore::import_audit(const std::vector<AuditRow>& rows, size_t chunk) {
  std::lock_guard<std::mutex> lk(mu_);
  try {
    for (size_t i = 0; i < rows.size(); i += chunk) {
      EtcdBatch b;
      for (size_t j = i; j < std::min(rows.size(), i + chunk); ++j) {
        const auto& a = rows[j];
        if (a.id <= 0) return make_error("store", "import audit: audit id " + std::to_string(a.id));
        b.put(keys_.audit(static_cast<uint64_t>(a.id)), etcd_codec::encode(a));
        counters_.audit = std::max(counters_.audit, static_cast<uint64_t>(a.id));
      }
      auto w = commit(b, "import audit");
      if (!w) return w.error();
    }
    return Status::Ok();
  } catch (const std::exception& e) {
    return make_error("store", std::string("import audit: ") + e.what());
  }
}

Status EtcdStore::import_open_orders(const std::vector<OrderRow>& rows, size_t chunk) {
  std::lock_guard<std::mutex> lk(mu_);
  try {
    for (size_t i = 0; i < rows.size(); i += chunk) {
      EtcdBatch b;
      EtcdRowGroups groups;
      for (size_t j = i; j < std::min(rows.size(), i + chunk); ++j)
        groups.add(etcd_codec::OrderRecord{rows[j], ++counters_.order});
      groups.put(b, keys_, counters_);
      auto w = commit(b, "import open orders");
      if (!w) return w.error();
    }
    return Status::Ok();
  } catch (const std::exception& e) {
    return make_error("store", std::string("import open orders: ") + e.what());
  }
}

Status EtcdStore::import_results(const std::vector<ResultRow>& rows, size_t chunk) {
  std::lock_guard<std::mutex> lk(mu_);
  try {
    for (size_t i = 0; i < rows.size(); i += chunk) {
      std::vector<OrderRef> refs;
      for (size_t j = i; j < std::min(rows.size(), i + chunk); ++j)
        refs.push_back({rows[j].order_id, rows[j].rollout_id});
      WrittenChanges staged;
      if (auto s = learn_orders(refs, staged); !s.ok()) return s;
      EtcdBatch b;
      EtcdRowGroups groups;
      for (size_t j = i; j < std::min(rows.size(), i + chunk); ++j) apply_result(groups, rows[j], staged);
      groups.put(b, keys_, counters_);
      auto w = commit(b, "import results", staged);
      if (!w) return w.error();
    }
    return Status::Ok();
  } catch (const std::exception& e) {
    return make_error("store", std::string("import results: ") + e.what());
  }
}

Expected<bool> EtcdStore::empty() {
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& [from, to] : row_ranges(keys_.p)) {
    auto r = client_->range(from, to, 1, /*keys_only=*/true);
    if (!r) return r.error();
    if (!r->kvs.empty()) return false;
  }
  return true;
}

Status EtcdStore::wipe() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<etcd::Op> ops;
  for (const auto& [from, to] : row_ranges(keys_.p)) ops.push_back(etcd::Op::del(from, to));
  auto r = client_->txn({}, ops);
  if (!r) return make_error(r.error().code, "wipe " + safe_text(keys_.p) + ": " + r.error().message);
  counters_ = committed_ = etcd_codec::Counters{};
  guard_revision_ = 0;
  return Status::Ok();
}

}  // namespace gantry::store
