#include "coordinator/store/sqlite_store.h"

#include <algorithm>

#include "coordinator/store/desired_rows.h"
#include "coordinator/store/guard.h"
#include "coordinator/store/sqlite.h"

namespace gantry::store {

namespace {

// 1: whole rollout states in rollouts.state. 2: a header there, host slots in rollout_hosts.
// 3: an order's result in its own row (columns outcome ... reported_at) instead of a row of a
// `results` table, one row write per report instead of two. Older databases are converted
// when opened. Tables added since (host_timeline, desired) need no conversion: kSchema creates them in an
// older database when it is opened, and an older coordinator ignores them, so they bump nothing.
constexpr int kSchemaVersion = 3;

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (
  host_id TEXT PRIMARY KEY, labels TEXT NOT NULL, services TEXT NOT NULL,
  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
  service TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
  path TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (service, version));
CREATE INDEX IF NOT EXISTS releases_sha ON releases (sha256);
CREATE TABLE IF NOT EXISTS rollouts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, version TEXT NOT NULL,
  kind TEXT NOT NULL, phase TEXT NOT NULL, created_by TEXT NOT NULL, reason TEXT NOT NULL,
  created_at INTEGER NOT NULL, finished_at INTEGER NOT NULL DEFAULT 0,
  revision INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rollouts_service ON rollouts (service, id);
CREATE TABLE IF NOT EXISTS rollout_hosts (
  rollout_id INTEGER NOT NULL, pos INTEGER NOT NULL, slot TEXT NOT NULL,
  PRIMARY KEY (rollout_id, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (
  order_id TEXT PRIMARY KEY, rollout_id INTEGER NOT NULL, host_id TEXT NOT NULL,
  body TEXT NOT NULL, acked INTEGER NOT NULL DEFAULT 0, reported INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  outcome TEXT, running_version TEXT, message TEXT, timings TEXT, reported_at INTEGER);
CREATE INDEX IF NOT EXISTS orders_open ON orders (reported, host_id);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id INTEGER NOT NULL, at INTEGER NOT NULL,
  message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_rollout ON events (rollout_id, id);
CREATE TABLE IF NOT EXISTS release_signatures (
  service TEXT NOT NULL, version TEXT NOT NULL, manifest TEXT NOT NULL, signature TEXT NOT NULL,
  PRIMARY KEY (service, version));
CREATE TABLE IF NOT EXISTS agent_keys (
  key TEXT PRIMARY KEY, host_id TEXT NOT NULL, state TEXT NOT NULL, first_seen INTEGER NOT NULL,
  updated_at INTEGER NOT NULL, updated_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operator_keys (
  key TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL,
  created_at INTEGER NOT NULL, updated_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS host_timeline (
  rollout_id INTEGER NOT NULL, host_id TEXT NOT NULL, seq INTEGER NOT NULL, phase TEXT NOT NULL,
  at_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,
  PRIMARY KEY (rollout_id, host_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS desired (
  service TEXT PRIMARY KEY, version TEXT NOT NULL, selector TEXT NOT NULL, converge TEXT NOT NULL,
  plan TEXT NOT NULL, rollout_id INTEGER NOT NULL, held INTEGER NOT NULL, note TEXT NOT NULL,
  updated_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, who TEXT NOT NULL,
  command TEXT NOT NULL, target TEXT NOT NULL, decision TEXT NOT NULL);
)sql";

bool is_active_phase(const std::string& p) { return p == "running" || p == "paused" || p == "rolling_back"; }

RolloutRow read_rollout(Stmt& s) {
  RolloutRow r;
  r.id = static_cast<uint64_t>(s.col_int(0));
  r.service = s.col_text(1);
  r.version = s.col_text(2);
  r.kind = s.col_text(3);
  r.phase = s.col_text(4);
  r.created_by = s.col_text(5);
  r.reason = s.col_text(6);
  r.created_at = s.col_int(7);
  r.finished_at = s.col_int(8);
  r.revision = s.col_int(9);
  r.state = nlohmann::json::parse(s.col_text(10));
  return r;
}

// A stored header gets its host slots back (in schedule order); a whole state (schema 1, or a
// rollout that never started) is left as it is.
void attach_hosts(Db& db, RolloutRow& r) {
  if (!r.state.is_object() || r.state.empty() || r.state.contains("hosts")) return;
  Stmt s(db.raw(), "SELECT slot FROM rollout_hosts WHERE rollout_id = ? ORDER BY pos");
  s.bind(1, static_cast<int64_t>(r.id));
  nlohmann::json hosts = nlohmann::json::array();
  while (s.step()) hosts.push_back(nlohmann::json::parse(s.col_text(0)));
  r.state["hosts"] = std::move(hosts);
}

// Schema 1 -> 2: every whole state becomes a header plus its slots, in one transaction.
void split_whole_states(Db& db) {
  Txn t(db);
  std::vector<std::pair<int64_t, nlohmann::json>> rows;
  {
    Stmt s(db.raw(), "SELECT id, state FROM rollouts");
    while (s.step()) {
      auto j = nlohmann::json::parse(s.col_text(1));
      if (j.is_object() && j.contains("hosts")) rows.emplace_back(s.col_int(0), std::move(j));
    }
  }
  Stmt put(db.raw(), "INSERT OR REPLACE INTO rollout_hosts (rollout_id, pos, slot) VALUES (?, ?, ?)");
  for (auto& [id, j] : rows) {
    int64_t pos = 0;
    for (const auto& h : j["hosts"]) {
      put.bind(1, id).bind(2, pos++).bind(3, h.dump());
      put.run();
      put.reset();
    }
    j.erase("hosts");
    Stmt u(db.raw(), "UPDATE rollouts SET state = ? WHERE id = ?");
    u.bind(1, j.dump()).bind(2, id).run();
  }
  Stmt v(db.raw(), "UPDATE meta SET value = ? WHERE key = 'schema_version'");
  v.bind(1, std::to_string(kSchemaVersion)).run();
  t.commit();
}

// Schema 2 -> 3: the result columns are added to `orders` (older databases have the table
// without them) and every order's last result moves there from `results`, which is dropped. A
// result whose order row is missing gets a closed order row of its own (body "{}"), so no
// recorded report is lost. One transaction.
void fold_results_into_orders(Db& db) {
  Txn t(db);
  std::vector<std::string> have;
  {
    Stmt s(db.raw(), "PRAGMA table_info(orders)");
    while (s.step()) have.push_back(s.col_text(1));
  }
  for (const char* col :
       {"outcome TEXT", "running_version TEXT", "message TEXT", "timings TEXT", "reported_at INTEGER"}) {
    const std::string name = std::string(col).substr(0, std::string(col).find(' '));
    if (std::find(have.begin(), have.end(), name) == have.end())
      db.exec(std::string("ALTER TABLE orders ADD COLUMN ") + col);
  }
  bool results = false;
  {
    Stmt s(db.raw(), "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'results'");
    results = s.step();
  }
  if (results) {
    db.exec(
        "INSERT INTO orders (order_id, rollout_id, host_id, body, acked, reported, created_at, outcome, "
        "running_version, "
        "message, timings, reported_at) "
        "SELECT order_id, rollout_id, host_id, '{}', 1, 1, at, outcome, running_version, message, timings, at FROM "
        "results "
        "WHERE id IN (SELECT MAX(id) FROM results GROUP BY order_id) "
        "ON CONFLICT(order_id) DO UPDATE SET acked = 1, reported = 1, outcome = excluded.outcome, "
        "running_version = excluded.running_version, message = excluded.message, timings = excluded.timings, "
        "reported_at = excluded.reported_at");
    db.exec("DROP TABLE results");
  }
  Stmt v(db.raw(), "UPDATE meta SET value = ? WHERE key = 'schema_version'");
  v.bind(1, std::to_string(kSchemaVersion)).run();
  t.commit();
}

// A report: the order's row gets its result and is closed (acked, reported). Written as an
// upsert so that a report is kept even if its order row were missing.
void write_result(Db& db, const ResultRow& r) {
  Stmt& s = db.cached(
      "INSERT INTO orders (order_id, rollout_id, host_id, body, acked, reported, created_at, outcome, running_version, "
      "message, timings, reported_at) VALUES (?, ?, ?, '{}', 1, 1, ?, ?, ?, ?, ?, ?) "
      "ON CONFLICT(order_id) DO UPDATE SET acked = 1, reported = 1, outcome = excluded.outcome, "
      "running_version = excluded.running_version, message = excluded.message, timings = excluded.timings, "
      "reported_at = excluded.reported_at");
  s.bind(1, r.order_id)
      .bind(2, static_cast<int64_t>(r.rollout_id))
      .bind(3, r.host_id)
      .bind(4, r.at)
      .bind(5, r.outcome)
      .bind(6, r.running_version)
      .bind(7, r.message)
      .bind(8, r.timings.dump())
      .bind(9, r.at)
      .run();
}

constexpr const char* kRolloutCols =
    "id, service, version, kind, phase, created_by, reason, created_at, finished_at, revision, state";

void insert_audit(Db& db, const AuditRow& a) {
  Stmt& s = db.cached("INSERT INTO audit (at, who, command, target, decision) VALUES (?, ?, ?, ?, ?)");
  s.bind(1, a.at).bind(2, a.who).bind(3, a.command).bind(4, a.target).bind(5, a.decision).run();
}

void insert_event(Db& db, const EventRow& e) {
  Stmt& s = db.cached("INSERT INTO events (rollout_id, at, message) VALUES (?, ?, ?)");
  s.bind(1, static_cast<int64_t>(e.rollout_id)).bind(2, e.at).bind(3, e.message).run();
}

void insert_timeline(Db& db, const TimelineRow& r) {
  Stmt& s = db.cached(
      "INSERT OR REPLACE INTO host_timeline (rollout_id, host_id, seq, phase, at_ms, received_ms) "
      "VALUES (?, ?, ?, ?, ?, ?)");
  s.bind(1, static_cast<int64_t>(r.rollout_id))
      .bind(2, r.host_id)
      .bind(3, static_cast<int64_t>(r.seq))
      .bind(4, r.phase)
      .bind(5, r.at_ms)
      .bind(6, r.received_ms)
      .run();
}

}  // namespace

SqliteStore::SqliteStore(Db* db) : db_(db) {}
SqliteStore::~SqliteStore() = default;

int64_t SqliteStore::wal_backlog() const { return db_->wal_backlog(); }

uint64_t SqliteStore::checkpoints() const { return db_->checkpoints(); }

Status SqliteStore::checkpoint() {
  return guard("checkpoint", [&]() -> Status {
    db_->checkpoint();
    return Status::Ok();
  });
}

Expected<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path, int64_t wal_cap_pages) {
  auto db = Db::open(path, wal_cap_pages);
  if (!db) return db.error();
  std::unique_ptr<SqliteStore> store(new SqliteStore(*db));
  try {
    store->db_->exec(kSchema);
    std::optional<int> stored;
    {  // finished before converting: an open read would lock the tables a conversion drops
      Stmt get(store->db_->raw(), "SELECT value FROM meta WHERE key = 'schema_version'");
      if (get.step()) stored = std::stoi(get.col_text(0));
    }
    if (stored) {
      const int v = *stored;
      if (v > kSchemaVersion) {
        return make_error("store", path + " has schema version " + std::to_string(v) +
                                       ", newer than this coordinator understands (" + std::to_string(kSchemaVersion) +
                                       ")");
      }
      if (v < 2) split_whole_states(*store->db_);
      if (v < 3) fold_results_into_orders(*store->db_);
    } else {
      Stmt put(store->db_->raw(), "INSERT INTO meta (key, value) VALUES ('schema_version', ?)");
      put.bind(1, std::to_string(kSchemaVersion)).run();
    }
  } catch (const SqliteError& e) {
    return make_error("store", "initialise " + path + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {
    return make_error("store", "convert " + path + " to schema " + std::to_string(kSchemaVersion) +
                                   ": corrupt rollout state: " + e.what());
  }
  return store;
}

Expected<uint64_t> SqliteStore::bump_epoch() {
  return guard("bump epoch", [&]() -> Expected<uint64_t> {
    Txn t(*db_);
    uint64_t epoch = 0;
    {
      Stmt get(db_->raw(), "SELECT value FROM meta WHERE key = 'epoch'");
      if (get.step()) epoch = std::stoull(get.col_text(0));
    }
    ++epoch;
    Stmt put(db_->raw(), "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)");
    put.bind(1, std::to_string(epoch)).run();
    t.commit();
    return epoch;
  });
}

Status SqliteStore::put_host(const HostRow& h) {
  return guard("put host", [&]() -> Status {
    Stmt s(db_->raw(),
           "INSERT INTO hosts (host_id, labels, services, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
           "ON CONFLICT(host_id) DO UPDATE SET labels = excluded.labels, services = excluded.services, "
           "last_seen = excluded.last_seen");
    s.bind(1, h.host_id)
        .bind(2, h.labels.dump())
        .bind(3, h.services.dump())
        .bind(4, h.first_seen)
        .bind(5, h.last_seen)
        .run();
    return Status::Ok();
  });
}

Status SqliteStore::put_hosts(const std::vector<HostRow>& hs) {
  if (hs.empty()) return Status::Ok();
  return guard("put hosts", [&]() -> Status {
    Txn t(*db_, Sync::kLazy);  // the next hello says it all again
    for (const auto& h : hs) {
      Stmt& s = db_->cached(
          "INSERT INTO hosts (host_id, labels, services, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
          "ON CONFLICT(host_id) DO UPDATE SET labels = excluded.labels, services = excluded.services, "
          "last_seen = excluded.last_seen");
      s.bind(1, h.host_id)
          .bind(2, h.labels.dump())
          .bind(3, h.services.dump())
          .bind(4, h.first_seen)
          .bind(5, h.last_seen);
      s.run();
    }
    t.commit();
    return Status::Ok();
  });
}

Expected<std::vector<HostRow>> SqliteStore::hosts() {
  return guard("list hosts", [&]() -> Expected<std::vector<HostRow>> {
    std::vector<HostRow> out;
    Stmt s(db_->raw(), "SELECT host_id, labels, services, first_seen, last_seen FROM hosts ORDER BY host_id");
    while (s.step()) {
      HostRow h;
      h.host_id = s.col_text(0);
      h.labels = nlohmann::json::parse(s.col_text(1));
      h.services = nlohmann::json::parse(s.col_text(2));
      h.first_seen = s.col_int(3);
      h.last_seen = s.col_int(4);
      out.push_back(std::move(h));
    }
    return out;
  });
}

Status SqliteStore::put_release(const ReleaseRow& r) {
  return guard("put release", [&]() -> Status {
    Txn t(*db_);
    Stmt s(db_->raw(),
           "INSERT INTO releases (service, version, sha256, size, path, created_at) VALUES (?, ?, ?, ?, ?, ?)");
    s.bind(1, r.service)
        .bind(2, r.version)
        .bind(3, r.sha256)
        .bind(4, static_cast<int64_t>(r.size))
        .bind(5, r.path)
        .bind(6, r.created_at)
        .run();
    if (!r.manifest.empty() || !r.signature.empty()) {
      Stmt g(db_->raw(),
             "INSERT OR REPLACE INTO release_signatures (service, version, manifest, signature) VALUES (?, ?, ?, ?)");
      g.bind(1, r.service).bind(2, r.version).bind(3, r.manifest).bind(4, r.signature).run();
    }
    t.commit();
    return Status::Ok();
  });
}

namespace {
ReleaseRow read_release(Stmt& s) {
  ReleaseRow r;
  r.service = s.col_text(0);
  r.version = s.col_text(1);
  r.sha256 = s.col_text(2);
  r.size = static_cast<uint64_t>(s.col_int(3));
  r.path = s.col_text(4);
  r.created_at = s.col_int(5);
  if (!s.col_null(6)) r.manifest = s.col_text(6);
  if (!s.col_null(7)) r.signature = s.col_text(7);
  return r;
}
constexpr const char* kReleaseSelect =
    "SELECT r.service, r.version, r.sha256, r.size, r.path, r.created_at, g.manifest, g.signature FROM releases r "
    "LEFT JOIN release_signatures g ON g.service = r.service AND g.version = r.version ";
}  // namespace

Expected<std::optional<ReleaseRow>> SqliteStore::release(const std::string& service, const std::string& version) {
  return guard("get release", [&]() -> Expected<std::optional<ReleaseRow>> {
    Stmt s(db_->raw(), std::string(kReleaseSelect) + "WHERE r.service = ? AND r.version = ?");
    s.bind(1, service).bind(2, version);
    if (!s.step()) return std::optional<ReleaseRow>();
    return std::optional<ReleaseRow>(read_release(s));
  });
}

Expected<std::optional<ReleaseRow>> SqliteStore::release_by_sha(const std::string& sha256) {
  return guard("get release", [&]() -> Expected<std::optional<ReleaseRow>> {
    Stmt s(db_->raw(), std::string(kReleaseSelect) + "WHERE r.sha256 = ? LIMIT 1");
    s.bind(1, sha256);
    if (!s.step()) return std::optional<ReleaseRow>();
    return std::optional<ReleaseRow>(read_release(s));
  });
}

Expected<std::vector<ReleaseRow>> SqliteStore::releases() {
  return guard("list releases", [&]() -> Expected<std::vector<ReleaseRow>> {
    Stmt s(db_->raw(), std::string(kReleaseSelect) + "ORDER BY r.created_at, r.service, r.version");
    std::vector<ReleaseRow> out;
    while (s.step()) out.push_back(read_release(s));
    return out;
  });
}

Expected<uint64_t> SqliteStore::create_rollout(const RolloutRow& r) {
  return guard("create rollout", [&]() -> Expected<uint64_t> {
    // Durable with the rollout's first step, which follows at once; a row whose first step was
    // never saved is marked failed at the next start (Coordinator::start).
    Txn t(*db_, Sync::kLazy);
    Stmt s(db_->raw(),
           "INSERT INTO rollouts (service, version, kind, phase, created_by, reason, created_at, state) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    s.bind(1, r.service)
        .bind(2, r.version)
        .bind(3, r.kind)
        .bind(4, r.phase)
        .bind(5, r.created_by)
        .bind(6, r.reason)
        .bind(7, r.created_at)
        .bind(8, r.state.dump())
        .run();
    const auto id = static_cast<uint64_t>(db_->last_insert_id());
    t.commit();
    return id;
  });
}

Status SqliteStore::save_step(const StepWrite& w) {
  return guard("save rollout step", [&]() -> Status {
    Txn t(*db_, w.durable || !w.audit.empty() ? Sync::kDurable : Sync::kLazy);
    int64_t revision = 0;
    if (w.assign_revision) {
      Stmt q(db_->raw(),
             "SELECT COALESCE(MAX(revision), 0) + 1 FROM rollouts WHERE service = (SELECT service FROM rollouts WHERE "
             "id = ?)");
      q.bind(1, static_cast<int64_t>(w.rollout_id));
      if (q.step()) revision = q.col_int(0);
    }
    {
      Stmt& s = db_->cached(
          "UPDATE rollouts SET phase = ?, state = ?, finished_at = ?, "
          "revision = CASE WHEN ? > 0 THEN ? ELSE revision END WHERE id = ?");
      s.bind(1, w.phase)
          .bind(2, w.state.dump())
          .bind(3, w.finished_at)
          .bind(4, revision)
          .bind(5, revision)
          .bind(6, static_cast<int64_t>(w.rollout_id))
          .run();
    }
    if (!w.slots.empty()) {
      Stmt& put = db_->cached("INSERT OR REPLACE INTO rollout_hosts (rollout_id, pos, slot) VALUES (?, ?, ?)");
      for (const auto& [pos, slot] : w.slots) {
        put.bind(1, static_cast<int64_t>(w.rollout_id)).bind(2, static_cast<int64_t>(pos)).bind(3, slot);
        put.run();
        put.reset();
      }
    }
    for (const auto& o : w.new_orders) {
      Stmt& s =
          db_->cached("INSERT INTO orders (order_id, rollout_id, host_id, body, created_at) VALUES (?, ?, ?, ?, ?)");
      s.bind(1, o.order_id)
          .bind(2, static_cast<int64_t>(o.rollout_id))
          .bind(3, o.host_id)
          .bind(4, o.body)
          .bind(5, o.created_at)
          .run();
    }
    for (const auto& e : w.events) insert_event(*db_, e);
    for (const auto& a : w.audit) insert_audit(*db_, a);
    if (w.desired) upsert_desired(*db_, *w.desired);
    for (const auto& r : w.results) write_result(*db_, r);
    for (const auto& r : w.timeline) insert_timeline(*db_, r);
    if (!w.acked.empty()) {
      for (const auto& id : w.acked) {
        Stmt& u = db_->cached("UPDATE orders SET acked = 1 WHERE order_id = ?");
        u.bind(1, id);
        u.run();
      }
    }
    if (w.finished_at > 0) {
      // An ended rollout orders nothing more; closed with the step that ends it.
      Stmt& s = db_->cached("UPDATE orders SET reported = 1 WHERE rollout_id = ? AND reported = 0");
      s.bind(1, static_cast<int64_t>(w.rollout_id)).run();
    }
    t.commit();
    return Status::Ok();
  });
}

Expected<std::optional<RolloutRow>> SqliteStore::rollout(uint64_t id) {
  return guard("get rollout", [&]() -> Expected<std::optional<RolloutRow>> {
    Stmt s(db_->raw(), std::string("SELECT ") + kRolloutCols + " FROM rollouts WHERE id = ?");
    s.bind(1, static_cast<int64_t>(id));
    if (!s.step()) return std::optional<RolloutRow>();
    RolloutRow r = read_rollout(s);
    attach_hosts(*db_, r);
    return std::optional<RolloutRow>(std::move(r));
  });
}

Expected<std::vector<RolloutRow>> SqliteStore::rollouts(const std::string& service, bool active_only, int limit,
                                                        bool with_hosts) {
  return guard("list rollouts", [&]() -> Expected<std::vector<RolloutRow>> {
    std::string sql = std::string("SELECT ") + kRolloutCols + " FROM rollouts WHERE (? = '' OR service = ?)";
    if (active_only) sql += " AND phase IN ('running', 'paused', 'rolling_back')";
    sql += " ORDER BY id DESC LIMIT ?";
    Stmt s(db_->raw(), sql);
    s.bind(1, service).bind(2, service).bind(3, static_cast<int64_t>(limit));
    std::vector<RolloutRow> out;
    while (s.step()) out.push_back(read_rollout(s));
    if (with_hosts) {
      for (auto& r : out) attach_hosts(*db_, r);
    }
    (void)is_active_phase;
    return out;
  });
}

Expected<std::vector<RolloutRow>> SqliteStore::latest_rollouts(const std::string& service, int window,
                                                               bool with_hosts) {
  return guard("list latest rollouts", [&]() -> Expected<std::vector<RolloutRow>> {
    Stmt s(db_->raw(),
           std::string("SELECT ") + kRolloutCols +
               " FROM rollouts WHERE id IN (SELECT MAX(id) FROM (SELECT id, service FROM rollouts"
               " WHERE (? = '' OR service = ?) ORDER BY id DESC LIMIT ?) GROUP BY service) ORDER BY id DESC");
    s.bind(1, service).bind(2, service).bind(3, static_cast<int64_t>(window));
    std::vector<RolloutRow> out;
    while (s.step()) out.push_back(read_rollout(s));
    if (with_hosts) {
      for (auto& r : out) attach_hosts(*db_, r);
    }
    return out;
  });
}

Expected<std::vector<OrderRow>> SqliteStore::open_orders() {
  return guard("list open orders", [&]() -> Expected<std::vector<OrderRow>> {
    Stmt s(db_->raw(),
           "SELECT order_id, rollout_id, host_id, body, acked, reported, created_at FROM orders WHERE reported = 0 "
           "ORDER BY created_at, order_id");
    std::vector<OrderRow> out;
    while (s.step()) {
      OrderRow o;
      o.order_id = s.col_text(0);
      o.rollout_id = static_cast<uint64_t>(s.col_int(1));
      o.host_id = s.col_text(2);
      o.body = s.col_text(3);
      o.acked = s.col_int(4) != 0;
      o.reported = s.col_int(5) != 0;
      o.created_at = s.col_int(6);
      out.push_back(std::move(o));
    }
    return out;
  });
}

Status SqliteStore::mark_acked(const std::string& order_id) {
  return guard("mark order acked", [&]() -> Status {
    Stmt& s = db_->cached("UPDATE orders SET acked = 1 WHERE order_id = ?");
    s.bind(1, order_id).run();
    return Status::Ok();
  });
}

Status SqliteStore::mark_acked(const std::vector<std::string>& order_ids) {
  if (order_ids.empty()) return Status::Ok();
  return guard("mark orders acked", [&]() -> Status {
    Txn t(*db_, Sync::kLazy);  // a lost ack means one more resend
    for (const auto& id : order_ids) {
      Stmt& s = db_->cached("UPDATE orders SET acked = 1 WHERE order_id = ?");
      s.bind(1, id);
      s.run();
    }
    t.commit();
    return Status::Ok();
  });
}

Status SqliteStore::close_orders(uint64_t rollout_id) {
  return guard("close orders", [&]() -> Status {
    Stmt s(db_->raw(), "UPDATE orders SET reported = 1 WHERE rollout_id = ? AND reported = 0");
    s.bind(1, static_cast<int64_t>(rollout_id)).run();
    return Status::Ok();
  });
}

Status SqliteStore::record_report(const ResultRow& r) {
  return guard("record report", [&]() -> Status {
    Txn t(*db_);
    write_result(*db_, r);
    t.commit();
    return Status::Ok();
  });
}

Expected<std::vector<ResultRow>> SqliteStore::results(uint64_t rollout_id) {
  return guard("list results", [&]() -> Expected<std::vector<ResultRow>> {
    Stmt s(db_->raw(),
           "SELECT rollout_id, host_id, order_id, outcome, running_version, message, timings, reported_at FROM orders "
           "WHERE rollout_id = ? AND reported_at IS NOT NULL ORDER BY reported_at, rowid");
    s.bind(1, static_cast<int64_t>(rollout_id));
    std::vector<ResultRow> out;
    while (s.step()) {
      ResultRow r;
      r.rollout_id = static_cast<uint64_t>(s.col_int(0));
      r.host_id = s.col_text(1);
      r.order_id = s.col_text(2);
      r.outcome = s.col_text(3);
      r.running_version = s.col_text(4);
      r.message = s.col_text(5);
      r.timings = nlohmann::json::parse(s.col_text(6));
      r.at = s.col_int(7);
      out.push_back(std::move(r));
    }
    return out;
  });
}

Status SqliteStore::add_timeline(const std::vector<TimelineRow>& rows) {
  if (rows.empty()) return Status::Ok();
  return guard("add timeline", [&]() -> Status {
    Txn t(*db_, Sync::kLazy);
    for (const auto& r : rows) insert_timeline(*db_, r);
    t.commit();
    return Status::Ok();
  });
}

Expected<std::vector<TimelineRow>> SqliteStore::timeline(uint64_t rollout_id) {
  return guard("list timeline", [&]() -> Expected<std::vector<TimelineRow>> {
    Stmt s(db_->raw(),
           "SELECT host_id, seq, phase, at_ms, received_ms FROM host_timeline WHERE rollout_id = ? ORDER BY host_id, "
           "seq");
    s.bind(1, static_cast<int64_t>(rollout_id));
    std::vector<TimelineRow> out;
    while (s.step()) {
      TimelineRow r;
      r.rollout_id = rollout_id;
      r.host_id = s.col_text(0);
      r.seq = static_cast<uint32_t>(s.col_int(1));
      r.phase = s.col_text(2);
      r.at_ms = s.col_int(3);
      r.received_ms = s.col_int(4);
      out.push_back(std::move(r));
    }
    return out;
  });
}

Expected<std::vector<EventRow>> SqliteStore::events(uint64_t rollout_id, int64_t after_id, int limit) {
  return guard("list events", [&]() -> Expected<std::vector<EventRow>> {
    Stmt s(db_->raw(),
           "SELECT id, rollout_id, at, message FROM events WHERE (? = 0 OR rollout_id = ?) AND id > ? ORDER BY id "
           "LIMIT ?");
    s.bind(1, static_cast<int64_t>(rollout_id))
        .bind(2, static_cast<int64_t>(rollout_id))
        .bind(3, after_id)
        .bind(4, static_cast<int64_t>(limit));
    std::vector<EventRow> out;
    while (s.step()) {
      EventRow e;
      e.id = s.col_int(0);
      e.rollout_id = static_cast<uint64_t>(s.col_int(1));
      e.at = s.col_int(2);
      e.message = s.col_text(3);
      out.push_back(std::move(e));
    }
    return out;
  });
}

Expected<std::vector<EventRow>> SqliteStore::recent_events(uint64_t rollout_id, int limit) {
  return guard("list recent events", [&]() -> Expected<std::vector<EventRow>> {
    Stmt s(db_->raw(), "SELECT id, rollout_id, at, message FROM events WHERE rollout_id = ? ORDER BY id DESC LIMIT ?");
    s.bind(1, static_cast<int64_t>(rollout_id)).bind(2, static_cast<int64_t>(limit));
    std::vector<EventRow> out;
    while (s.step()) {
      EventRow e;
      e.id = s.col_int(0);
      e.rollout_id = static_cast<uint64_t>(s.col_int(1));
      e.at = s.col_int(2);
      e.message = s.col_text(3);
      out.push_back(std::move(e));
    }
    std::reverse(out.begin(), out.end());
    return out;
  });
}

Status SqliteStore::add_event(const EventRow& e) {
  return guard("add event", [&]() -> Status {
    Txn t(*db_);  // durable, whatever the previous transaction's sync mode was
    insert_event(*db_, e);
    t.commit();
    return Status::Ok();
  });
}

Status SqliteStore::audit(const AuditRow& a) {
  return guard("audit", [&]() -> Status {
    Txn t(*db_);  // durable, whatever the previous transaction's sync mode was
    insert_audit(*db_, a);
    t.commit();
    return Status::Ok();
  });
}

Expected<std::vector<AuditRow>> SqliteStore::audit_log(int limit) {
  return guard("list audit", [&]() -> Expected<std::vector<AuditRow>> {
    Stmt s(db_->raw(), "SELECT id, at, who, command, target, decision FROM audit ORDER BY id DESC LIMIT ?");
    s.bind(1, static_cast<int64_t>(limit));
    std::vector<AuditRow> out;
    while (s.step()) {
      AuditRow a;
      a.id = s.col_int(0);
      a.at = s.col_int(1);
      a.who = s.col_text(2);
      a.command = s.col_text(3);
      a.target = s.col_text(4);
      a.decision = s.col_text(5);
      out.push_back(std::move(a));
    }
    return out;
  });
}

Status SqliteStore::put_agent_keys(const std::vector<AgentKeyRow>& rows) {
  return guard("put agent keys", [&]() -> Status {
    Txn t(*db_);
    for (const auto& r : rows) {
      Stmt s(db_->raw(),
             "INSERT OR REPLACE INTO agent_keys (key, host_id, state, first_seen, updated_at, updated_by) VALUES (?, "
             "?, ?, ?, ?, ?)");
      s.bind(1, r.key)
          .bind(2, r.host_id)
          .bind(3, r.state)
          .bind(4, r.first_seen)
          .bind(5, r.updated_at)
          .bind(6, r.updated_by)
          .run();
    }
    t.commit();
    return Status::Ok();
  });
}

Expected<std::vector<AgentKeyRow>> SqliteStore::agent_keys() {
  return guard("list agent keys", [&]() -> Expected<std::vector<AgentKeyRow>> {
    Stmt s(db_->raw(),
           "SELECT key, host_id, state, first_seen, updated_at, updated_by FROM agent_keys ORDER BY first_seen, key");
    std::vector<AgentKeyRow> out;
    while (s.step())
      out.push_back({s.col_text(0), s.col_text(1), s.col_text(2), s.col_int(3), s.col_int(4), s.col_text(5)});
    return out;
  });
}

Status SqliteStore::put_operator_keys(const std::vector<OperatorKeyRow>& rows) {
  return guard("put operator keys", [&]() -> Status {
    Txn t(*db_);
    for (const auto& r : rows) {
      Stmt s(db_->raw(),
             "INSERT OR REPLACE INTO operator_keys (key, name, role, state, created_at, updated_by) VALUES (?, ?, ?, "
             "?, ?, ?)");
      s.bind(1, r.key)
          .bind(2, r.name)
          .bind(3, r.role)
          .bind(4, r.state)
          .bind(5, r.created_at)
          .bind(6, r.updated_by)
          .run();
    }
    t.commit();
    return Status::Ok();
  });
}

Expected<std::vector<OperatorKeyRow>> SqliteStore::operator_keys() {
  return guard("list operator keys", [&]() -> Expected<std::vector<OperatorKeyRow>> {
    Stmt s(db_->raw(),
           "SELECT key, name, role, state, created_at, updated_by FROM operator_keys ORDER BY created_at, name");
    std::vector<OperatorKeyRow> out;
    while (s.step())
      out.push_back({s.col_text(0), s.col_text(1), s.col_text(2), s.col_text(3), s.col_int(4), s.col_text(5)});
    return out;
  });
}

}  // namespace gantry::store

namespace gantry::store {

Expected<std::unique_ptr<Store>> Store::open(const std::string& path, int64_t wal_cap_pages) {
  auto s = SqliteStore::open(path, wal_cap_pages);
  if (!s) return s.error();
  return std::unique_ptr<Store>(std::move(*s));
}

}  // namespace gantry::store
