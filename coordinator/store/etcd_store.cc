#include "coordinator/store/etcd_store.h"

#include <algorithm>
#include <charconv>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <tuple>
#include <unordered_set>

#include "common/util/text.h"

namespace gantry::store {

namespace {

// Every value of `kvs` read back as a row with `decode` (a stored value is hostile: the first
// that is not a row is the Error, naming its key).
template <typename Row, typename Decode>
Expected<std::vector<Row>> decode_all(const std::vector<etcd::KeyValue>& kvs, Decode decode) {
  std::vector<Row> out;
  out.reserve(kvs.size());
  for (const auto& kv : kvs) {
    auto row = decode(kv.key, kv.value);
    if (!row) return row.error();
    out.push_back(std::move(*row));
  }
  return out;
}

using etcd_codec::OrderRecord;
using etcd_codec::ResultRecord;

// Reads of many keys go in transactions of this many get operations: etcd's default
// --max-txn-ops, so they work against any etcd.
constexpr size_t kReadChunk = 128;

bool is_active_phase(const std::string& p) { return p == "running" || p == "paused" || p == "rolling_back"; }

// Runs f, turning what the JSON library or the standard library throws into an Error value.
template <typename F>
auto guard_etcd(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const nlohmann::json::exception& e) {
    return make_error("store", std::string(what) + ": " + e.what());
  } catch (const std::exception& e) {
    return make_error("store", std::string(what) + ": " + e.what());
  }
}

// The id at the end of an index key ("<...>/00000000000000000042").
Expected<uint64_t> trailing_id(const std::string& key) {
  const auto slash = key.rfind('/');
  const std::string digits = key.substr(slash == std::string::npos ? 0 : slash + 1);
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || digits.empty())
    return make_error("store", "corrupt index key " + safe_text(key, 512));
  return v;
}

bool same(const etcd_codec::Counters& a, const etcd_codec::Counters& b) {
  return a.rollout == b.rollout && a.event == b.event && a.audit == b.audit && a.order == b.order &&
         a.release == b.release && a.epoch == b.epoch && a.group == b.group;
}

// SQL's LIMIT: negative = no limit. As etcd's range limit (0 = no limit).
int64_t range_limit(int limit) { return limit < 0 ? 0 : limit; }

}  // namespace

EtcdStore::EtcdStore(std::shared_ptr<etcd::Client> client, std::string prefix, std::optional<Fence> fence)
    : client_(std::move(client)), keys_{std::move(prefix)}, fence_(std::move(fence)) {}

Expected<std::unique_ptr<EtcdStore>> EtcdStore::open(std::shared_ptr<etcd::Client> client, std::string prefix,
                                                     std::optional<Fence> fence) {
  if (!client) return make_error("store", "etcd store: no client");
  if (prefix.empty()) return make_error("store", "etcd store: the key prefix is empty");
  if (prefix.back() != '/') prefix += '/';
  if (fence && fence->key.empty()) return make_error("store", "etcd store: the fence names no key");
  std::unique_ptr<EtcdStore> s(new EtcdStore(std::move(client), std::move(prefix), std::move(fence)));
  std::random_device rd;
  s->token_prefix_ = std::to_string(rd()) + "-" + std::to_string(rd()) + "-";
  std::lock_guard<std::mutex> lk(s->mu_);
  if (auto st = s->load_counters(); !st.ok()) return st.error();
  auto c = s->get_one(s->keys_.compacted());
  if (!c) return c.error();
  if (*c) s->compacted_ = (*c)->mod_revision;
  return s;
}

void EtcdStore::note(int64_t revision) {
  int64_t seen = seen_revision_.load();
  while (revision > seen && !seen_revision_.compare_exchange_weak(seen, revision)) {}
}

Status EtcdStore::load_counters() {
  auto read = get_many({keys_.counters(), keys_.write_guard()});
  if (!read) return read.error();
  etcd_codec::Counters c;
  if (auto it = read->find(keys_.counters()); it != read->end()) {
    auto d = etcd_codec::decode_counters(it->first, it->second.value);
    if (!d) return d.error();
    c = *d;
  }
  auto g = read->find(keys_.write_guard());
  guard_revision_ = g == read->end() ? 0 : g->second.mod_revision;
  guard_value_ = g == read->end() ? "" : g->second.value;
  counters_ = committed_ = c;
  reload_counters_ = false;
  return Status::Ok();
}

Status EtcdStore::reload() {
  if (reload_counters_) {
    if (auto s = load_counters(); !s.ok()) return s;
  }
  settle_unsure();
  return Status::Ok();
}

Status EtcdStore::ready_to_write() {
  if (auto s = reload(); !s.ok()) return s;
  return flush_held();
}

Expected<int64_t> EtcdStore::commit(EtcdBatch& b, const char* what, const WrittenChanges& staged) {
  if (!same(counters_, committed_)) b.put(keys_.counters(), etcd_codec::encode(counters_));
  if (b.empty()) return seen_revision_.load();
  const WriteGuard guard{keys_.write_guard(), guard_revision_, token_prefix_ + std::to_string(++tokens_)};
  last_token_ = guard.token;
  auto r = b.commit(*client_, fence_, guard, what);
  if (r) {
    committed_ = counters_;
    guard_revision_ = *r;
    written_.keep(staged);
    note(*r);
    return r;
  }
  counters_ = committed_;
  written_.clear();
  // Not known to be written, or written over by someone else: read the ids again first.
  if (r.error().code == "etcd" || r.error().code == "conflict") reload_counters_ = true;
  return r.error();
}

Status EtcdStore::write_rows(const char* what, const std::function<void(EtcdBatch&)>& fill) {
  return guard_etcd(what, [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    EtcdBatch b;
    fill(b);
    auto r = commit(b, what);
    if (!r) return r.error();
    return Status::Ok();
  });
}

Expected<std::vector<etcd::KeyValue>> EtcdStore::scan(const std::string& prefix, int64_t limit, bool descending,
                                                      bool keys_only) {
  auto r = client_->range(prefix, etcd::prefix_end(prefix), limit, keys_only, false, descending);
  if (!r) return r.error();
  note(r->revision);
  return std::move(r->kvs);
}

Expected<std::optional<etcd::KeyValue>> EtcdStore::get_one(const std::string& key) {
  auto r = client_->range(key);
  if (!r) return r.error();
  note(r->revision);
  if (r->kvs.empty()) return std::optional<etcd::KeyValue>();
  return std::optional<etcd::KeyValue>(std::move(r->kvs[0]));
}

Expected<std::map<std::string, etcd::KeyValue>> EtcdStore::get_many(const std::vector<std::string>& keys) {
  std::map<std::string, etcd::KeyValue> out;
  std::vector<std::string> unique(keys);
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  for (size_t i = 0; i < unique.size(); i += kReadChunk) {
    std::vector<etcd::Op> ops;
    for (size_t j = i; j < std::min(unique.size(), i + kReadChunk); ++j) ops.push_back(etcd::Op::get(unique[j]));
    auto r = client_->txn({}, ops);
    if (!r) return r.error();
    note(r->revision);
    for (auto& got : r->gets) {
      for (auto& kv : got) out.emplace(kv.key, std::move(kv));
    }
  }
  return out;
}

int64_t EtcdStore::wal_backlog() const { return std::max<int64_t>(0, seen_revision_.load() - compacted_.load()); }

uint64_t EtcdStore::checkpoints() const { return checkpoints_.load(); }

Status EtcdStore::checkpoint() {
  return guard_etcd("compact etcd history", [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (wal_backlog() == 0) return Status::Ok();
    // The marker's own revision is the one compacted to: read back as meta/compacted's
    // mod_revision when the store is opened again.
    EtcdBatch b;
    b.put(keys_.compacted(), "{}");
    auto rev = commit(b, "compact etcd history");
    if (!rev) return rev.error();
    if (auto s = client_->compact(*rev); !s.ok()) {
      // Compacted further by someone else already: nothing left to do.
      if (s.error().message.find("compacted") == std::string::npos) return s;
    }
    compacted_ = *rev;
    note(*rev);
    ++checkpoints_;
    return Status::Ok();
  });
}

Expected<uint64_t> EtcdStore::bump_epoch() {
  return guard_etcd("bump epoch", [&]() -> Expected<uint64_t> {
    std::lock_guard<std::mutex> lk(mu_);
    if (fence_) {
      auto kv = get_one(fence_->key);
      if (!kv) return kv.error();
      const int64_t now = *kv ? (*kv)->create_revision : 0;
      if (now != fence_->create_revision)
        return make_error("deposed", "bump epoch: the leadership key " + safe_text(fence_->key) +
                                         " was created at revision " + std::to_string(now) + ", not " +
                                         std::to_string(fence_->create_revision));
      return static_cast<uint64_t>(fence_->create_revision);
    }
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    ++counters_.epoch;
    const uint64_t epoch = counters_.epoch;
    EtcdBatch b;
    auto r = commit(b, "bump epoch");
    if (!r) return r.error();
    return epoch;
  });
}

Status EtcdStore::put_host(const HostRow& h) { return put_hosts({h}); }

Status EtcdStore::put_hosts(const std::vector<HostRow>& hs) {
  if (hs.empty()) return Status::Ok();
  return guard_etcd("put hosts", [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    std::vector<std::string> keys;
    for (const auto& h : hs) keys.push_back(keys_.host(h.host_id));
    auto read = get_many(keys);
    if (!read) return read.error();
    EtcdBatch b;
    for (const auto& h : hs) {
      const std::string key = keys_.host(h.host_id);
      HostRow row = h;
      std::optional<std::string> existing;
      if (auto p = b.pending(key)) {
        existing = *p;
      } else if (auto it = read->find(key); it != read->end()) {
        existing = it->second.value;
      }
      if (existing) {  // an upsert keeps when the host was first seen
        auto old = etcd_codec::decode_host(key, *existing);
        if (!old) return old.error();
        row.first_seen = old->first_seen;
      }
      b.put(key, etcd_codec::encode(row));
    }
    auto r = commit(b, "put hosts");
    if (!r) return r.error();
    return Status::Ok();
  });
}

Expected<std::vector<HostRow>> EtcdStore::hosts() {
  return guard_etcd("list hosts", [&]() -> Expected<std::vector<HostRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    auto kvs = scan(keys_.hosts());
    if (!kvs) return kvs.error();
    auto decoded = decode_all<HostRow>(*kvs, etcd_codec::decode_host);
    if (!decoded) return decoded.error();
    std::vector<HostRow> out = std::move(*decoded);
    std::sort(out.begin(), out.end(), [](const HostRow& a, const HostRow& b) { return a.host_id < b.host_id; });
    return out;
  });
}

Status EtcdStore::put_release(const ReleaseRow& r) {
  return guard_etcd("put release", [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    const std::string key = keys_.release(r.service, r.version);
    const std::string value = etcd_codec::encode(r);
    EtcdBatch b;
    b.require_absent(key);
    b.put(key, value);
    b.put(keys_.release_sha(r.sha256, ++counters_.release), value);
    auto w = commit(b, "put release");
    if (!w) {
      if (w.error().code == "exists")
        return make_error("store", "put release: " + safe_text(r.service) + " " + safe_text(r.version) +
                                       " is already stored (a release is never replaced)");
      return w.error();
    }
    return Status::Ok();
  });
}

Expected<std::optional<ReleaseRow>> EtcdStore::release(const std::string& service, const std::string& version) {
  return guard_etcd("get release", [&]() -> Expected<std::optional<ReleaseRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    auto kv = get_one(keys_.release(service, version));
    if (!kv) return kv.error();
    if (!*kv) return std::optional<ReleaseRow>();
    auto r = etcd_codec::decode_release((*kv)->key, (*kv)->value);
    if (!r) return r.error();
    return std::optional<ReleaseRow>(std::move(*r));
  });
}

Expected<std::optional<ReleaseRow>> EtcdStore::release_by_sha(const std::string& sha256) {
  return guard_etcd("get release", [&]() -> Expected<std::optional<ReleaseRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    auto kvs = scan(keys_.release_shas(sha256), 1);
    if (!kvs) return kvs.error();
    if (kvs->empty()) return std::optional<ReleaseRow>();
    auto r = etcd_codec::decode_release(kvs->front().key, kvs->front().value);
    if (!r) return r.error();
    return std::optional<ReleaseRow>(std::move(*r));
  });
}

Expected<std::vector<ReleaseRow>> EtcdStore::releases() {
  return guard_etcd("list releases", [&]() -> Expected<std::vector<ReleaseRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    auto kvs = scan(keys_.p + "release/");
    if (!kvs) return kvs.error();
    auto decoded = decode_all<ReleaseRow>(*kvs, etcd_codec::decode_release);
    if (!decoded) return decoded.error();
    std::vector<ReleaseRow> out = std::move(*decoded);
    // As SqliteStore lists them: by upload time, then service and version.
    std::stable_sort(out.begin(), out.end(), [](const ReleaseRow& a, const ReleaseRow& b) {
      return std::tie(a.created_at, a.service, a.version) < std::tie(b.created_at, b.service, b.version);
    });
    return out;
  });
}

Expected<uint64_t> EtcdStore::create_rollout(const RolloutRow& r) {
  return guard_etcd("create rollout", [&]() -> Expected<uint64_t> {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    RolloutRow h = r;
    h.id = ++counters_.rollout;
    h.finished_at = 0;
    h.revision = 0;
    EtcdBatch b;
    b.put(keys_.rollout(h.id), etcd_codec::encode(h));
    b.put(keys_.by_service(h.service, h.id), "");
    if (is_active_phase(h.phase)) b.put(keys_.active(h.id), "");
    WrittenChanges staged;
    staged.headers[h.id] = h;
    staged.created.insert(h.id);
    auto w = commit(b, "create rollout", staged);
    if (!w) return w.error();
    return h.id;
  });
}

Status EtcdStore::learn_orders(const std::vector<OrderRef>& refs, const WrittenChanges& staged) {
  std::set<uint64_t> rollouts;
  bool any_rollout = false;
  for (const auto& r : refs) {
    if (written_.order(r.order_id, staged)) continue;
    if (r.rollout_id == 0)
      any_rollout = true;
    else if (!written_.knows_all(r.rollout_id, staged))
      rollouts.insert(r.rollout_id);
  }
  // An acknowledgement names no rollout: its order is looked for among every running one's.
  if (any_rollout) {
    auto all = scan(keys_.orders(), 0, false, /*keys_only=*/true);
    if (!all) return all.error();
    for (const auto& kv : *all) {
      const std::string rest = kv.key.substr(keys_.orders().size());
      const auto slash = rest.find('/');
      if (slash == std::string::npos) return make_error("store", "corrupt order key " + safe_text(kv.key, 512));
      auto rid = trailing_id(rest.substr(0, slash));
      if (!rid) return rid.error();
      if (!written_.knows_all(*rid, staged)) rollouts.insert(*rid);
    }
  }
  // Orders are stored in groups: every order of a rollout concerned is read, and kept.
  for (uint64_t rid : rollouts) {
    auto orders = read_orders(rid);
    if (!orders) return orders.error();
    for (const auto& o : *orders)
      written_.learn(o.row.order_id, OrderMeta{rid, o.row.host_id, o.seq, !o.row.reported, o.row.acked});
    written_.learned_all(rid);
  }
  return Status::Ok();
}

Expected<std::vector<etcd_codec::OrderRecord>> EtcdStore::read_orders(uint64_t rollout_id) {
  auto groups = scan(keys_.orders(rollout_id));
  if (!groups) return groups.error();
  std::vector<etcd_codec::OrderRecord> out;
  if (groups->empty()) return out;
  auto results = scan(keys_.results(rollout_id));
  if (!results) return results.error();
  auto marks = scan(keys_.ackeds(rollout_id), 0, false, /*keys_only=*/true);
  if (!marks) return marks.error();
  std::unordered_set<std::string> reported, acked;
  for (const auto& kv : *results) {
    auto group = etcd_codec::decode_result_group(kv.key, kv.value);
    if (!group) return group.error();
    for (const auto& r : *group) reported.insert(r.row.order_id);
  }
  for (const auto& kv : *marks) acked.insert(kv.key);
  std::unordered_map<std::string, size_t> at;  // an order stored twice: the last one
  for (const auto& kv : *groups) {
    auto group = etcd_codec::decode_order_group(kv.key, kv.value);
    if (!group) return group.error();
    for (auto& o : *group) {
      if (o.row.rollout_id != rollout_id)
        return make_error("store",
                          "corrupt record at etcd key " + safe_text(kv.key, 512) + ": another rollout's order");
      o.row.reported = reported.count(o.row.order_id) > 0;
      o.row.acked = o.row.acked || acked.count(keys_.acked(rollout_id, o.row.order_id)) > 0;
      if (auto it = at.find(o.row.order_id); it != at.end()) {
        out[it->second] = std::move(o);
      } else {
        at.emplace(o.row.order_id, out.size());
        out.push_back(std::move(o));
      }
    }
  }
  return out;
}

Expected<std::optional<RolloutRow>> EtcdStore::header_for(uint64_t id, const WrittenChanges& staged) {
  if (const RolloutRow* h = written_.header(id, staged)) return std::optional<RolloutRow>(*h);
  auto kv = get_one(keys_.rollout(id));
  if (!kv) return kv.error();
  if (!*kv) return std::optional<RolloutRow>();
  auto h = etcd_codec::decode_rollout((*kv)->key, (*kv)->value);
  if (!h) return h.error();
  written_.learn(*h);
  return std::optional<RolloutRow>(std::move(*h));
}

// A report: stored under the order's rollout, which closes the order (with the order's host and
// sequence number; a report of an order not stored is kept with the rollout and host it names).
void EtcdStore::apply_result(EtcdRowGroups& groups, const ResultRow& r, WrittenChanges& staged) {
  OrderMeta m;
  if (const OrderMeta* known = written_.order(r.order_id, staged)) {
    m = *known;
  } else {
    m = OrderMeta{r.rollout_id, r.host_id, ++counters_.order, false, true};
  }
  m.open = false;
  m.acked = true;
  ResultRecord res;
  res.row = r;
  res.row.rollout_id = m.rollout_id;
  res.row.host_id = m.host_id;
  res.seq = m.seq;
  groups.add(std::move(res));
  staged.orders[r.order_id] = std::move(m);
}

// An acknowledgement of an open order: a mark next to it (the order's record is not rewritten).
// Of an order closed or not stored: nothing to record.
void EtcdStore::apply_ack(EtcdBatch& b, const std::string& order_id, WrittenChanges& staged) {
  const OrderMeta* known = written_.order(order_id, staged);
  if (!known || !known->open || known->acked) return;
  OrderMeta m = *known;
  m.acked = true;
  b.put(keys_.acked(m.rollout_id, order_id), "");
  staged.orders[order_id] = std::move(m);
}

// An ended rollout orders nothing more: its orders and their marks go, as one operation each.
void EtcdStore::end_orders(EtcdBatch& b, uint64_t rollout_id, WrittenChanges& staged) {
  b.del_prefix(keys_.orders(rollout_id));
  b.del_prefix(keys_.ackeds(rollout_id));
  staged.ended.insert(rollout_id);
}

Status EtcdStore::add_step(EtcdBatch& b, WrittenChanges& staged, EtcdRowGroups& groups, const StepWrite& w) {
  // What the step changes and this store did not write itself is read first (once).
  std::unordered_set<std::string> created;
  for (const auto& o : w.new_orders) created.insert(o.order_id);
  std::vector<OrderRef> changed;
  for (const auto& r : w.results) {
    if (!created.count(r.order_id)) changed.push_back({r.order_id, r.rollout_id});
  }
  for (const auto& id : w.acked) {
    if (!created.count(id)) changed.push_back({id, 0});
  }
  if (auto s = learn_orders(changed, staged); !s.ok()) return s;
  auto header = header_for(w.rollout_id, staged);
  if (!header) return header.error();
  if (*header) {
    if (w.assign_revision) {
      auto last = get_one(keys_.revision((*header)->service));
      if (!last) return last.error();
      int64_t n = 0;
      if (*last) {
        const std::string& v = (*last)->value;
        auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc() || ptr != v.data() + v.size() || n < 0)
          return make_error("store",
                            "corrupt record at etcd key " + safe_text((*last)->key, 512) + ": not a revision number");
      }
      (*header)->revision = n + 1;
      b.put(keys_.revision((*header)->service), std::to_string((*header)->revision));
    }
    (*header)->phase = w.phase;
    (*header)->state = w.state;
    (*header)->finished_at = w.finished_at;
    b.put(keys_.rollout(w.rollout_id), etcd_codec::encode(**header));
    staged.headers[w.rollout_id] = **header;
    if (is_active_phase(w.phase))
      b.put(keys_.active(w.rollout_id), "");
    else
      b.del(keys_.active(w.rollout_id));
  }
  if (!w.slots.empty() && written_.unplanned(w.rollout_id, staged)) {
    // The rollout's first slots: its plan, in groups (a slot/ key written later overrides).
    for (const auto& [pos, slot] : w.slots) groups.add_plan_slot(w.rollout_id, pos, slot);
    staged.planned.insert(w.rollout_id);
  } else {
    for (const auto& [pos, slot] : w.slots) b.put(keys_.slot(w.rollout_id, pos), slot);
  }
  for (const auto& o : w.new_orders) {
    OrderRecord rec{o, ++counters_.order};
    rec.row.acked = false;
    rec.row.reported = false;
    staged.orders[o.order_id] = OrderMeta{o.rollout_id, o.host_id, rec.seq, true, false};
    groups.add(std::move(rec));
  }
  for (const auto& e : w.events) {
    EventRow row = e;
    row.id = static_cast<int64_t>(++counters_.event);
    groups.add(std::move(row));
  }
  for (const auto& a : w.audit) {
    AuditRow row = a;
    row.id = static_cast<int64_t>(++counters_.audit);
    b.put(keys_.audit(static_cast<uint64_t>(row.id)), etcd_codec::encode(row));
  }
  if (w.desired) b.put(keys_.desired(w.desired->service), etcd_codec::encode(*w.desired));
  for (const auto& r : w.results) apply_result(groups, r, staged);
  for (const auto& t : w.timeline) groups.add(t);
  for (const auto& id : w.acked) apply_ack(b, id, staged);
  // An ended rollout orders nothing more; its orders are closed with the step that ends it.
  if (w.finished_at > 0) end_orders(b, w.rollout_id, staged);
  return Status::Ok();
}

Status EtcdStore::save_step(const StepWrite& w) {
  return guard_etcd("save rollout step", [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (!w.durable) return hold(w);
    if (auto ready = reload(); !ready.ok()) return ready.error();
    // This rollout's held-back steps go with this one; any other rollout's are written first.
    std::vector<StepWrite> own;
    if (auto it = held_.find(w.rollout_id); it != held_.end()) {
      own = std::move(it->second);
      held_.erase(it);
    }
    if (auto s = flush_held(); !s.ok()) {
      held_[w.rollout_id] = std::move(own);
      return s;
    }
    held_rows_ = 0;
    WrittenChanges staged;
    EtcdBatch b;
    EtcdRowGroups groups;
    own.push_back(w);
    for (const auto& step : own) {
      if (auto s = add_step(b, staged, groups, step); !s.ok()) {
        counters_ = committed_;  // no id handed out is lost: the event log has no gap
        return s;                // the held steps go with the error: the caller restores the rollout
      }
    }
    groups.put(b, keys_, counters_);
    auto r = commit(b, "save rollout step", staged);
    if (!r) return r.error();
    return Status::Ok();
  });
}

Status EtcdStore::attach_hosts(RolloutRow& r) {
  if (!r.state.is_object() || r.state.empty() || r.state.contains("hosts")) return Status::Ok();
  // The plan first, then every slot written since over it, by position.
  auto plans = scan(keys_.slot_plans(r.id));
  if (!plans) return plans.error();
  auto kvs = scan(keys_.slots(r.id));
  if (!kvs) return kvs.error();
  std::map<uint64_t, nlohmann::json> by_pos;
  for (const auto& kv : *plans) {
    auto first = trailing_id(kv.key);
    if (!first) return first.error();
    auto slots = etcd_codec::decode_slot_plan(kv.key, kv.value);
    if (!slots) return slots.error();
    for (size_t i = 0; i < slots->size(); ++i) by_pos[*first + i] = std::move((*slots)[i]);
  }
  for (const auto& kv : *kvs) {
    auto pos = trailing_id(kv.key);
    if (!pos) return pos.error();
    auto j = etcd_codec::decode_slot(kv.key, kv.value);
    if (!j) return j.error();
    by_pos[*pos] = std::move(*j);
  }
  nlohmann::json hosts = nlohmann::json::array();
  for (auto& [pos, j] : by_pos) hosts.push_back(std::move(j));
  r.state["hosts"] = std::move(hosts);
  return Status::Ok();
}

Expected<std::optional<RolloutRow>> EtcdStore::rollout(uint64_t id) {
  return guard_etcd("get rollout", [&]() -> Expected<std::optional<RolloutRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    auto kv = get_one(keys_.rollout(id));
    if (!kv) return kv.error();
    if (!*kv) return std::optional<RolloutRow>();
    auto r = etcd_codec::decode_rollout((*kv)->key, (*kv)->value);
    if (!r) return r.error();
    if (auto s = attach_hosts(*r); !s.ok()) return s.error();
    return std::optional<RolloutRow>(std::move(*r));
  });
}

Expected<std::vector<RolloutRow>> EtcdStore::headers(const std::vector<uint64_t>& ids) {
  std::vector<std::string> keys;
  for (uint64_t id : ids) keys.push_back(keys_.rollout(id));
  auto read = get_many(keys);
  if (!read) return read.error();
  std::vector<RolloutRow> out;
  for (const auto& k : keys) {
    auto it = read->find(k);
    if (it == read->end()) continue;  // an index entry without its rollout: not a rollout
    auto r = etcd_codec::decode_rollout(it->first, it->second.value);
    if (!r) return r.error();
    out.push_back(std::move(*r));
  }
  return out;
}

Expected<std::vector<RolloutRow>> EtcdStore::newest(const std::string& service, int limit) {
  std::vector<RolloutRow> out;
  if (limit == 0) return out;
  if (service.empty()) {
    auto kvs = scan(keys_.rollouts(), range_limit(limit), /*descending=*/true);
    if (!kvs) return kvs.error();
    auto decoded = decode_all<RolloutRow>(*kvs, etcd_codec::decode_rollout);
    if (!decoded) return decoded.error();
    out = std::move(*decoded);
    return out;
  }
  auto idx = scan(keys_.by_services(service), range_limit(limit), /*descending=*/true, /*keys_only=*/true);
  if (!idx) return idx.error();
  std::vector<uint64_t> ids;
  for (const auto& kv : *idx) {
    auto id = trailing_id(kv.key);
    if (!id) return id.error();
    ids.push_back(*id);
  }
  auto rows = headers(ids);
  if (!rows) return rows.error();
  for (auto& r : *rows) {
    if (r.service == service) out.push_back(std::move(r));
  }
  return out;
}

Expected<std::vector<RolloutRow>> EtcdStore::rollouts(const std::string& service, bool active_only, int limit,
                                                      bool with_hosts) {
  return guard_etcd("list rollouts", [&]() -> Expected<std::vector<RolloutRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    std::vector<RolloutRow> out;
    if (limit == 0) return out;
    if (active_only) {
      auto idx = scan(keys_.actives(), 0, /*descending=*/true, /*keys_only=*/true);
      if (!idx) return idx.error();
      std::vector<uint64_t> ids;
      for (const auto& kv : *idx) {
        auto id = trailing_id(kv.key);
        if (!id) return id.error();
        ids.push_back(*id);
      }
      auto rows = headers(ids);
      if (!rows) return rows.error();
      for (auto& r : *rows) {
        if (limit > 0 && out.size() >= static_cast<size_t>(limit)) break;
        if ((service.empty() || r.service == service) && is_active_phase(r.phase)) out.push_back(std::move(r));
      }
    } else {
      auto rows = newest(service, limit);
      if (!rows) return rows.error();
      out = std::move(*rows);
    }
    if (with_hosts) {
      for (auto& r : out) {
        if (auto s = attach_hosts(r); !s.ok()) return s.error();
      }
    }
    return out;
  });
}

Expected<std::vector<RolloutRow>> EtcdStore::latest_rollouts(const std::string& service, int window, bool with_hosts) {
  return guard_etcd("list latest rollouts", [&]() -> Expected<std::vector<RolloutRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    auto rows = newest(service, window);
    if (!rows) return rows.error();
    std::vector<RolloutRow> out;
    std::set<std::string> seen;
    for (auto& r : *rows) {
      if (seen.insert(r.service).second) out.push_back(std::move(r));
    }
    if (with_hosts) {
      for (auto& r : out) {
        if (auto s = attach_hosts(r); !s.ok()) return s.error();
      }
    }
    return out;
  });
}

Expected<std::vector<OrderRow>> EtcdStore::open_orders() {
  return guard_etcd("list open orders", [&]() -> Expected<std::vector<OrderRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    // The orders of running rollouts, less those reported; acknowledged if marked.
    auto keys = scan(keys_.orders(), 0, false, /*keys_only=*/true);
    if (!keys) return keys.error();
    std::set<uint64_t> rollouts;
    for (const auto& kv : *keys) {
      const std::string rest = kv.key.substr(keys_.orders().size());
      auto rid = trailing_id(rest.substr(0, rest.find('/')));
      if (!rid || rest.find('/') == std::string::npos)
        return make_error("store", "corrupt order key " + safe_text(kv.key, 512));
      rollouts.insert(*rid);
    }
    std::vector<OrderRow> out;
    for (uint64_t rid : rollouts) {
      auto orders = read_orders(rid);
      if (!orders) return orders.error();
      for (auto& o : *orders) {
        written_.learn(o.row.order_id, OrderMeta{rid, o.row.host_id, o.seq, !o.row.reported, o.row.acked});
        if (o.row.reported) continue;
        out.push_back(std::move(o.row));
      }
      written_.learned_all(rid);
    }
    std::sort(out.begin(), out.end(), [](const OrderRow& a, const OrderRow& b) {
      return a.created_at != b.created_at ? a.created_at < b.created_at : a.order_id < b.order_id;
    });
    return out;
  });
}

Status EtcdStore::mark_acked(const std::string& order_id) { return mark_acked(std::vector<std::string>{order_id}); }

Status EtcdStore::mark_acked(const std::vector<std::string>& order_ids) {
  if (order_ids.empty()) return Status::Ok();
  return guard_etcd("mark orders acked", [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    WrittenChanges staged;
    std::vector<OrderRef> refs;
    for (const auto& id : order_ids) refs.push_back({id, 0});
    if (auto s = learn_orders(refs, staged); !s.ok()) return s;
    EtcdBatch b;
    for (const auto& id : order_ids) apply_ack(b, id, staged);
    auto r = commit(b, "mark orders acked", staged);
    if (!r) return r.error();
    return Status::Ok();
  });
}

Status EtcdStore::close_orders(uint64_t rollout_id) {
  return guard_etcd("close orders", [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    EtcdBatch b;
    WrittenChanges staged;
    end_orders(b, rollout_id, staged);  // forgets its orders (and its header: read again if needed)
    auto r = commit(b, "close orders", staged);
    if (!r) return r.error();
    return Status::Ok();
  });
}

Status EtcdStore::record_report(const ResultRow& row) {
  return guard_etcd("record report", [&]() -> Status {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto ready = ready_to_write(); !ready.ok()) return ready.error();
    WrittenChanges staged;
    if (auto s = learn_orders({{row.order_id, row.rollout_id}}, staged); !s.ok()) return s;
    EtcdBatch b;
    EtcdRowGroups groups;
    apply_result(groups, row, staged);
    groups.put(b, keys_, counters_);
    auto r = commit(b, "record report", staged);
    if (!r) return r.error();
    return Status::Ok();
  });
}

Expected<std::vector<ResultRow>> EtcdStore::results(uint64_t rollout_id) {
  return guard_etcd("list results", [&]() -> Expected<std::vector<ResultRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    auto kvs = scan(keys_.results(rollout_id));
    if (!kvs) return kvs.error();
    // Groups in the order written: a report recorded again replaces the first.
    std::vector<ResultRecord> recs;
    std::unordered_map<std::string, size_t> at;
    for (const auto& kv : *kvs) {
      auto group = etcd_codec::decode_result_group(kv.key, kv.value);
      if (!group) return group.error();
      for (auto& r : *group) {
        if (auto it = at.find(r.row.order_id); it != at.end()) {
          recs[it->second] = std::move(r);
        } else {
          at.emplace(r.row.order_id, recs.size());
          recs.push_back(std::move(r));
        }
      }
    }
    std::stable_sort(recs.begin(), recs.end(), [](const ResultRecord& a, const ResultRecord& b) {
      return a.row.at != b.row.at ? a.row.at < b.row.at : a.seq < b.seq;
    });
    std::vector<ResultRow> out;
    for (auto& r : recs) out.push_back(std::move(r.row));
    return out;
  });
}

Status EtcdStore::add_timeline(const std::vector<TimelineRow>& rows) {
  if (rows.empty()) return Status::Ok();
  return write_rows("add timeline", [&](EtcdBatch& b) {
    EtcdRowGroups groups;
    for (const auto& t : rows) groups.add(t);
    groups.put(b, keys_, counters_);
  });
}

Expected<std::vector<TimelineRow>> EtcdStore::timeline(uint64_t rollout_id) {
  return guard_etcd("list timeline", [&]() -> Expected<std::vector<TimelineRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    auto kvs = scan(keys_.timelines(rollout_id));
    if (!kvs) return kvs.error();
    // Groups in the order written: an entry written again replaces the first (as SQLite's
    // INSERT OR REPLACE); by host, then seq.
    std::map<std::pair<std::string, uint32_t>, TimelineRow> by_entry;
    for (const auto& kv : *kvs) {
      auto group = etcd_codec::decode_timeline_group(kv.key, kv.value);
      if (!group) return group.error();
      for (auto& t : *group) {
        t.rollout_id = rollout_id;
        auto k = std::make_pair(t.host_id, t.seq);
        by_entry[std::move(k)] = std::move(t);
      }
    }
    std::vector<TimelineRow> out;
    out.reserve(by_entry.size());
    for (auto& [k, t] : by_entry) out.push_back(std::move(t));
    return out;
  });
}

Status EtcdStore::append_event_groups(const std::vector<etcd::KeyValue>& kvs, std::vector<EventRow>& out) {
  for (const auto& kv : kvs) {
    auto group = etcd_codec::decode_event_group(kv.key, kv.value);
    if (!group) return group.error();
    for (auto& e : *group) out.push_back(std::move(e));
  }
  return Status::Ok();
}

Expected<std::vector<EventRow>> EtcdStore::events(uint64_t rollout_id, int64_t after_id, int limit) {
  return guard_etcd("list events", [&]() -> Expected<std::vector<EventRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    std::vector<EventRow> out;
    if (limit == 0 || after_id == std::numeric_limits<int64_t>::max()) return out;
    std::vector<EventRow> rows;
    if (rollout_id != 0) {
      const uint64_t from = after_id < 0 ? 0 : static_cast<uint64_t>(after_id) + 1;
      // The group that holds `from` may start before it: the last group starting at or before it.
      const std::string at = keys_.event(rollout_id, from);
      auto before = client_->range(keys_.events(rollout_id), at + '\0', 1, false, false, /*descending=*/true);
      if (!before) return before.error();
      note(before->revision);
      // Each group holds one event at least: `limit` groups from there hold `limit` events.
      auto r = client_->range(at + '\0', etcd::prefix_end(keys_.events(rollout_id)), range_limit(limit));
      if (!r) return r.error();
      note(r->revision);
      if (auto s = append_event_groups(before->kvs, rows); !s.ok()) return s.error();
      if (auto s = append_event_groups(r->kvs, rows); !s.ok()) return s.error();
    } else {  // every rollout's events, by id
      auto r = scan(keys_.events());
      if (!r) return r.error();
      if (auto s = append_event_groups(*r, rows); !s.ok()) return s.error();
    }
    for (auto& e : rows) {
      if (e.id > after_id) out.push_back(std::move(e));
    }
    std::sort(out.begin(), out.end(), [](const EventRow& a, const EventRow& b) { return a.id < b.id; });
    if (limit > 0 && out.size() > static_cast<size_t>(limit)) out.resize(static_cast<size_t>(limit));
    return out;
  });
}

Expected<std::vector<EventRow>> EtcdStore::recent_events(uint64_t rollout_id, int limit) {
  return guard_etcd("list recent events", [&]() -> Expected<std::vector<EventRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    flush_held_for_read();
    std::vector<EventRow> out;
    if (limit == 0) return out;
    // Each group holds one event at least: the last `limit` groups hold the last `limit` events.
    auto kvs = scan(keys_.events(rollout_id), range_limit(limit), /*descending=*/true);
    if (!kvs) return kvs.error();
    if (auto s = append_event_groups(*kvs, out); !s.ok()) return s.error();
    std::sort(out.begin(), out.end(), [](const EventRow& a, const EventRow& b) { return a.id < b.id; });
    if (limit > 0 && out.size() > static_cast<size_t>(limit))
      out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
    return out;
  });
}

Status EtcdStore::add_event(const EventRow& e) {
  return write_rows("add event", [&](EtcdBatch& b) {
    EventRow row = e;
    row.id = static_cast<int64_t>(++counters_.event);
    b.put(keys_.event(row.rollout_id, static_cast<uint64_t>(row.id)), etcd_codec::encode(std::vector<EventRow>{row}));
  });
}

Expected<std::vector<DesiredRow>> EtcdStore::desired() {
  return guard_etcd("read desired state", [&]() -> Expected<std::vector<DesiredRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    auto kvs = scan(keys_.desireds());
    if (!kvs) return kvs.error();
    auto decoded = decode_all<DesiredRow>(*kvs, etcd_codec::decode_desired);
    if (!decoded) return decoded.error();
    std::vector<DesiredRow> out = std::move(*decoded);
    std::sort(out.begin(), out.end(), [](const DesiredRow& a, const DesiredRow& b) { return a.service < b.service; });
    return out;
  });
}

Status EtcdStore::put_desired(const DesiredRow& d) {
  return write_rows("write desired state",
                    [&](EtcdBatch& b) { b.put(keys_.desired(d.service), etcd_codec::encode(d)); });
}

Status EtcdStore::audit(const AuditRow& a) {
  return write_rows("audit", [&](EtcdBatch& b) {
    AuditRow row = a;
    row.id = static_cast<int64_t>(++counters_.audit);
    b.put(keys_.audit(static_cast<uint64_t>(row.id)), etcd_codec::encode(row));
  });
}

Expected<std::vector<AuditRow>> EtcdStore::audit_log(int limit) {
  return guard_etcd("list audit", [&]() -> Expected<std::vector<AuditRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<AuditRow> out;
    if (limit == 0) return out;
    auto kvs = scan(keys_.audits(), range_limit(limit), /*descending=*/true);
    if (!kvs) return kvs.error();
    auto decoded = decode_all<AuditRow>(*kvs, etcd_codec::decode_audit);
    if (!decoded) return decoded.error();
    out = std::move(*decoded);
    return out;
  });
}

Status EtcdStore::put_agent_keys(const std::vector<AgentKeyRow>& rows) {
  return write_rows("put agent keys", [&](EtcdBatch& b) {
    for (const auto& k : rows) b.put(keys_.agent_key(k.key), etcd_codec::encode(k));
  });
}

Expected<std::vector<AgentKeyRow>> EtcdStore::agent_keys() {
  return guard_etcd("list agent keys", [&]() -> Expected<std::vector<AgentKeyRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    auto kvs = scan(keys_.agent_keys());
    if (!kvs) return kvs.error();
    auto decoded = decode_all<AgentKeyRow>(*kvs, etcd_codec::decode_agent_key);
    if (!decoded) return decoded.error();
    std::vector<AgentKeyRow> out = std::move(*decoded);
    std::sort(out.begin(), out.end(), [](const AgentKeyRow& a, const AgentKeyRow& b) {
      return a.first_seen != b.first_seen ? a.first_seen < b.first_seen : a.key < b.key;
    });
    return out;
  });
}

Status EtcdStore::put_operator_keys(const std::vector<OperatorKeyRow>& rows) {
  return write_rows("put operator keys", [&](EtcdBatch& b) {
    for (const auto& k : rows) b.put(keys_.operator_key(k.key), etcd_codec::encode(k));
  });
}

Expected<std::vector<OperatorKeyRow>> EtcdStore::operator_keys() {
  return guard_etcd("list operator keys", [&]() -> Expected<std::vector<OperatorKeyRow>> {
    std::lock_guard<std::mutex> lk(mu_);
    auto kvs = scan(keys_.operator_keys());
    if (!kvs) return kvs.error();
    auto decoded = decode_all<OperatorKeyRow>(*kvs, etcd_codec::decode_operator_key);
    if (!decoded) return decoded.error();
    std::vector<OperatorKeyRow> out = std::move(*decoded);
    std::sort(out.begin(), out.end(), [](const OperatorKeyRow& a, const OperatorKeyRow& b) {
      if (a.created_at != b.created_at) return a.created_at < b.created_at;
      return a.name != b.name ? a.name < b.name : a.key < b.key;
    });
    return out;
  });
}

}  // namespace gantry::store
