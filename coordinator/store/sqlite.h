// A thin RAII layer over the SQLite C API: connections, prepared statements, transactions.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/util/expected.h"

namespace gantry::store {

class Stmt {
 public:
  Stmt(sqlite3* db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, std::string_view v);
  Stmt& bind_null(int i);
  // Steps once: true while a row is available. Throws SqliteError on failure.
  bool step();
  // Runs to completion (for statements without rows).
  void run();
  // Ready to bind and run again (one prepared statement for many rows).
  void reset();
  int64_t col_int(int i) const;
  std::string col_text(int i) const;
  bool col_null(int i) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

// Raised inside the store module only; the Store turns it into an Error at its boundary.
struct SqliteError : std::runtime_error {
  int code;
  SqliteError(int c, const std::string& m) : std::runtime_error(m), code(c) {}
};

// How a transaction reaches the disk. kDurable: the commit returns once the WAL is fsynced
// (synchronous=FULL). kLazy: the commit is atomic and survives a crash of the process, but
// not of the machine until the next durable commit fsyncs the WAL, which covers every frame
// written before it (synchronous=NORMAL). For writes that are safe to lose on power loss.
enum class Sync { kDurable, kLazy };

// After a checkpoint the WAL file is cut back to this size when it is reused (SQLite's
// journal_size_limit): 64 MiB, so one very long rollout does not leave a huge file behind.
inline constexpr int64_t kWalSizeLimitBytes = 64LL << 20;

class Db {
 public:
  // WAL, synchronous=FULL, foreign keys; no automatic checkpoint below `wal_cap_pages`
  // (Store::open, kWalCapPages).
  static Expected<Db*> open(const std::string& path, int64_t wal_cap_pages);
  ~Db();
  sqlite3* raw() { return db_; }
  void exec(std::string_view sql);
  int64_t last_insert_id() const { return sqlite3_last_insert_rowid(db_); }
  void set_sync(Sync s);  // outside transactions only
  // A prepared statement kept for the connection's life, reset and unbound, ready to bind: for
  // writes run per row on hot paths (preparing one costs more than running it). Only for
  // statements that run to completion (INSERT, UPDATE, BEGIN...): a half-read SELECT would
  // keep its read transaction open until its next use.
  Stmt& cached(std::string_view sql);

  // Pages committed to the WAL since its last restart (SQLite's WAL hook), minus those of the
  // small write that restarted it after the last checkpoint at rest: 0 = nothing to checkpoint.
  int64_t wal_backlog() const { return wal_frames_ > wal_base_ ? wal_frames_ - wal_base_ : 0; }
  // When wal_backlog() > 0 and no transaction is open: copies the WAL into the database
  // (PASSIVE checkpoint: an fsync of the WAL, then of the database) and then restarts the WAL
  // with one small lazy write (Sync::kLazy; a counter in `meta`), which pays the new WAL
  // header's fsync now instead of the next durable commit. Three fsyncs, at rest. Throws
  // SqliteError.
  void checkpoint();
  uint64_t checkpoints() const { return checkpoints_; }  // at rest and at the cap, this process

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  static int on_wal_commit(void* self, sqlite3* db, const char* name, int frames);
  sqlite3* db_;
  Sync sync_ = Sync::kDurable;
  int64_t wal_cap_ = 0;
  int64_t wal_frames_ = 0;
  int64_t wal_base_ = 0;
  uint64_t checkpoints_ = 0;
  std::unordered_map<std::string, std::unique_ptr<Stmt>> cache_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed uncommitted.
class Txn {
 public:
  explicit Txn(Db& db, Sync sync = Sync::kDurable);
  ~Txn();
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace gantry::store
