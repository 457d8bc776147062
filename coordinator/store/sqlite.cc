#include "coordinator/store/sqlite.h"

namespace gantry::store {

namespace {
[[noreturn]] void fail(sqlite3* db, int rc, std::string_view what) {
  throw SqliteError(rc, std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
}
}  // namespace

Stmt::Stmt(sqlite3* db, std::string_view sql) : db_(db) {
  int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &st_, nullptr);
  if (rc != SQLITE_OK) fail(db, rc, "prepare");
}

Stmt::~Stmt() { sqlite3_finalize(st_); }

Stmt& Stmt::bind(int i, int64_t v) {
  int rc = sqlite3_bind_int64(st_, i, v);
  if (rc != SQLITE_OK) fail(db_, rc, "bind");
  return *this;
}

Stmt& Stmt::bind(int i, std::string_view v) {
  int rc = sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) fail(db_, rc, "bind");
  return *this;
}

Stmt& Stmt::bind_null(int i) {
  int rc = sqlite3_bind_null(st_, i);
  if (rc != SQLITE_OK) fail(db_, rc, "bind");
  return *this;
}

bool Stmt::step() {
  int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(db_, rc, "step");
}

void Stmt::run() {
  while (step()) {}
}

void Stmt::reset() {
  sqlite3_reset(st_);
  sqlite3_clear_bindings(st_);
}

int64_t Stmt::col_int(int i) const { return sqlite3_column_int64(st_, i); }

std::string Stmt::col_text(int i) const {
  const unsigned char* p = sqlite3_column_text(st_, i);
  int n = sqlite3_column_bytes(st_, i);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

bool Stmt::col_null(int i) const { return sqlite3_column_type(st_, i) == SQLITE_NULL; }

Expected<Db*> Db::open(const std::string& path, int64_t wal_cap_pages) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return make_error("store", "open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  Db* out = new Db(db);
  try {
    out->exec("PRAGMA journal_mode=WAL;");
    // No automatic checkpoint (see kWalCapPages): the hook below replaces SQLite's, which ran
    // one every N pages in the middle of rollouts (two fsyncs, then the restarted WAL's header).
    out->exec("PRAGMA wal_autocheckpoint=0;");
    out->exec("PRAGMA journal_size_limit=" + std::to_string(kWalSizeLimitBytes) + ";");
    out->wal_cap_ = wal_cap_pages;
    sqlite3_wal_hook(db, &Db::on_wal_commit, out);
    out->exec("PRAGMA synchronous=FULL;");
    out->exec("PRAGMA foreign_keys=ON;");
  } catch (const SqliteError& e) {
    delete out;
    return make_error("store", std::string("configure ") + path + ": " + e.what());
  }
  return out;
}

int Db::on_wal_commit(void* self, sqlite3* db, const char*, int frames) {
  auto* d = static_cast<Db*>(self);
  d->wal_frames_ = frames;
  if (d->wal_cap_ > 0 && frames >= d->wal_cap_) {
    // The cap: checkpoint now, as SQLite's own hook would (the commit is already done). The
    // next commit restarts the WAL and syncs its header; if none comes before the coordinator
    // is at rest, checkpoint() restarts it then (the backlog still counts the old frames).
    if (sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) == SQLITE_OK)
      d->checkpoints_++;
  }
  return SQLITE_OK;
}

void Db::checkpoint() {
  if (wal_backlog() == 0 || !sqlite3_get_autocommit(db_)) return;
  int log = 0, done = 0;
  int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  if (rc != SQLITE_OK) fail(db_, rc, "checkpoint");
  checkpoints_++;
  if (done != log) return;  // a reader still needs the WAL's end; the next call finishes
  // Every frame is in the database: the next write starts the WAL over and syncs its new
  // header (even with synchronous=NORMAL). Done here, at rest, so that the first durable
  // commit of the next rollout costs one fsync like every other.
  {
    Txn t(*this, Sync::kLazy);
    cached(
        "INSERT INTO meta (key, value) VALUES ('wal_checkpoints', '1') "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
        .run();
    t.commit();
  }
  wal_base_ = wal_frames_;  // the restart write's own pages are no backlog
}

Db::~Db() {
  cache_.clear();  // statements are finalized before the connection closes
  sqlite3_close(db_);
}

Stmt& Db::cached(std::string_view sql) {
  auto it = cache_.find(std::string(sql));
  if (it != cache_.end()) {
    it->second->reset();
    return *it->second;
  }
  auto st = std::make_unique<Stmt>(db_, sql);
  return *cache_.emplace(std::string(sql), std::move(st)).first->second;
}

void Db::exec(std::string_view sql) {
  char* err = nullptr;
  std::string s(sql);
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string m = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    throw SqliteError(rc, m);
  }
}

void Db::set_sync(Sync s) {
  if (s == sync_) return;
  cached(s == Sync::kDurable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL").run();
  sync_ = s;
}

Txn::Txn(Db& db, Sync sync) : db_(db) {
  db_.set_sync(sync);
  db_.cached("BEGIN IMMEDIATE").run();
}

Txn::~Txn() {
  if (!done_) {
    try {
      db_.cached("ROLLBACK").run();
    } catch (...) {}
  }
}

void Txn::commit() {
  db_.cached("COMMIT").run();
  done_ = true;
}

}  // namespace gantry::store
