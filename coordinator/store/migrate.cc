#include "coordinator/store/migrate.h"

#include <algorithm>
#include <functional>

#include "coordinator/store/etcd_store.h"
#include "coordinator/store/sqlite.h"
#include "coordinator/store/sqlite_store.h"

namespace gantry::store {

namespace {

// The most start counts (SQLite epochs) migrate will lift etcd's revision over, one write each.
constexpr uint64_t kMaxEpochFloor = 1'000'000;

// What the Store interface does not list: every release (in upload order) and the start
// counter, read from the database directly.
struct SqliteExtras {
  std::vector<ReleaseRow> releases;
  uint64_t epoch = 0;
};

Expected<SqliteExtras> read_extras(const std::string& path) {
  auto opened = Db::open(path, kWalCapPages);
  if (!opened) return opened.error();
  std::unique_ptr<Db> db(*opened);
  SqliteExtras out;
  try {
    Stmt s(
        db->raw(),
        "SELECT r.service, r.version, r.sha256, r.size, r.path, r.created_at, g.manifest, g.signature FROM releases r "
        "LEFT JOIN release_signatures g ON g.service = r.service AND g.version = r.version ORDER BY r.rowid");
    while (s.step()) {
      ReleaseRow r;
      r.service = s.col_text(0);
      r.version = s.col_text(1);
      r.sha256 = s.col_text(2);
      r.size = static_cast<uint64_t>(s.col_int(3));
      r.path = s.col_text(4);
      r.created_at = s.col_int(5);
      if (!s.col_null(6)) r.manifest = s.col_text(6);
      if (!s.col_null(7)) r.signature = s.col_text(7);
      out.releases.push_back(std::move(r));
    }
    Stmt e(db->raw(), "SELECT value FROM meta WHERE key = 'epoch'");
    if (e.step()) out.epoch = std::stoull(e.col_text(0));
  } catch (const std::exception& e) {
    return make_error("store", "read " + path + ": " + e.what());
  }
  return out;
}

template <typename T>
Status in_chunks(const std::vector<T>& rows, size_t n, const std::function<Status(const std::vector<T>&)>& put) {
  for (size_t i = 0; i < rows.size(); i += n) {
    std::vector<T> part(rows.begin() + static_cast<std::ptrdiff_t>(i),
                        rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), i + n)));
    if (auto s = put(part); !s.ok()) return s;
  }
  return Status::Ok();
}

// Every kind of row in a store, counted through the Store interface (releases: those of
// `releases` found again).
Expected<MigrationCounts> count(Store& s, const std::vector<ReleaseRow>& releases) {
  MigrationCounts c;
  auto hosts = s.hosts();
  if (!hosts) return hosts.error();
  c["hosts"] = hosts->size();
  uint64_t found = 0;
  for (const auto& r : releases) {
    auto got = s.release(r.service, r.version);
    if (!got) return got.error();
    if (*got && (*got)->sha256 == r.sha256 && (*got)->manifest == r.manifest) ++found;
  }
  c["releases"] = found;
  auto rollouts = s.rollouts("", false, -1, true);
  if (!rollouts) return rollouts.error();
  c["rollouts"] = rollouts->size();
  c["host slots"] = 0;
  c["results"] = 0;
  c["timeline rows"] = 0;
  for (const auto& r : *rollouts) {
    if (r.state.is_object() && r.state.contains("hosts") && r.state["hosts"].is_array())
      c["host slots"] += r.state["hosts"].size();
    auto res = s.results(r.id);
    if (!res) return res.error();
    c["results"] += res->size();
    auto t = s.timeline(r.id);
    if (!t) return t.error();
    c["timeline rows"] += t->size();
  }
  auto events = s.events(0, 0, -1);
  if (!events) return events.error();
  c["events"] = events->size();
  auto audit = s.audit_log(-1);
  if (!audit) return audit.error();
  c["audit rows"] = audit->size();
  auto open = s.open_orders();
  if (!open) return open.error();
  c["open orders"] = open->size();
  auto desired = s.desired();
  if (!desired) return desired.error();
  c["desired"] = desired->size();
  auto ak = s.agent_keys();
  if (!ak) return ak.error();
  c["agent keys"] = ak->size();
  auto ok = s.operator_keys();
  if (!ok) return ok.error();
  c["operator keys"] = ok->size();
  return c;
}

}  // namespace

Expected<MigrationCounts> migrate(SqliteStore& from, const std::string& sqlite_path, EtcdStore& to,
                                  etcd::Client& client, bool force) {
  auto empty = to.empty();
  if (!empty) return empty.error();
  if (!*empty) {
    if (!force)
      return make_error("not_empty", "the etcd prefix " + to.prefix() +
                                         " already holds a store; migrate --force replaces it (stop every coordinator "
                                         "that uses it first)");
    if (auto s = to.wipe(); !s.ok()) return s.error();
  }
  auto extras = read_extras(sqlite_path);
  if (!extras) return extras.error();

  auto hosts = from.hosts();
  if (!hosts) return hosts.error();
  if (auto s = in_chunks<HostRow>(*hosts, 1000, [&](const auto& part) { return to.put_hosts(part); }); !s.ok())
    return s.error();
  for (const auto& r : extras->releases) {
    if (auto s = to.put_release(r); !s.ok()) return s.error();
  }
  auto rollouts = from.rollouts("", false, -1, true);
  if (!rollouts) return rollouts.error();
  std::reverse(rollouts->begin(), rollouts->end());  // oldest first
  for (const auto& r : *rollouts) {
    if (auto s = to.import_rollout(r); !s.ok()) return s.error();
    auto t = from.timeline(r.id);
    if (!t) return t.error();
    if (auto s = in_chunks<TimelineRow>(*t, 1000, [&](const auto& part) { return to.add_timeline(part); }); !s.ok())
      return s.error();
    auto res = from.results(r.id);
    if (!res) return res.error();
    if (auto s = to.import_results(*res); !s.ok()) return s.error();
  }
  auto events = from.events(0, 0, -1);
  if (!events) return events.error();
  if (auto s = to.import_events(*events); !s.ok()) return s.error();
  auto audit = from.audit_log(-1);
  if (!audit) return audit.error();
  std::reverse(audit->begin(), audit->end());
  if (auto s = to.import_audit(*audit); !s.ok()) return s.error();
  auto open = from.open_orders();
  if (!open) return open.error();
  if (auto s = to.import_open_orders(*open); !s.ok()) return s.error();
  auto desired = from.desired();
  if (!desired) return desired.error();
  for (const auto& d : *desired) {
    if (auto s = to.put_desired(d); !s.ok()) return s.error();
  }
  auto ak = from.agent_keys();
  if (!ak) return ak.error();
  if (auto s = in_chunks<AgentKeyRow>(*ak, 1000, [&](const auto& part) { return to.put_agent_keys(part); }); !s.ok())
    return s.error();
  auto ok = from.operator_keys();
  if (!ok) return ok.error();
  if (auto s = in_chunks<OperatorKeyRow>(*ok, 1000, [&](const auto& part) { return to.put_operator_keys(part); });
      !s.ok())
    return s.error();

  // Epochs: the next leader's is its key's creation revision, which must exceed every SQLite
  // epoch agents have journaled. One small write per revision still missing.
  if (extras->epoch > kMaxEpochFloor)
    return make_error("store", "the SQLite store's epoch " + std::to_string(extras->epoch) + " is above " +
                                   std::to_string(kMaxEpochFloor) + ", more revisions than migrate writes");
  const std::string floor_key = to.prefix() + "meta/epoch_floor";
  for (uint64_t i = 0; i <= kMaxEpochFloor; ++i) {
    auto r = client.txn({}, {etcd::Op::put(floor_key, std::to_string(extras->epoch))});
    if (!r) return r.error();
    if (static_cast<uint64_t>(r->revision) > extras->epoch) break;
  }

  auto want = count(from, extras->releases);
  if (!want) return want.error();
  auto got = count(to, extras->releases);
  if (!got) return got.error();
  for (const auto& [kind, n] : *want) {
    if ((*got)[kind] != n)
      return make_error("store", "after the copy the etcd store has " + std::to_string((*got)[kind]) + " " + kind +
                                     ", the SQLite store " + std::to_string(n));
  }
  return *got;
}

}  // namespace gantry::store
