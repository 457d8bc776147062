// When the coordinator's store reaches the disk: one fsync per durable commit, none for a lazy
// one, no WAL checkpoint while writing (SQLite's automatic checkpoint is off) unless the WAL
// passes its cap, and a checkpoint at rest that also pays the restarted WAL's header sync, so
// the next durable commit costs one fsync again (docs/GUARANTEES.md, 3). The syncs are counted
// by a pass-through SQLite VFS around the default one: what SQLite asks of the OS, no timing.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>

#include "coordinator/store/store.h"
#include "tests/unit/agent_test_util.h"
#include "tests/unit/store_test_util.h"

using namespace gantry;
using gantry::agent::testing::TempDir;

namespace {

// ---- a counting VFS: every call goes to the default VFS; xSync is counted per file kind ----

struct Syncs {
  int db = 0;   // the main database file
  int wal = 0;  // its write-ahead log
  int total() const { return db + wal; }
};
Syncs g_syncs;
sqlite3_vfs* g_base = nullptr;
sqlite3_vfs g_vfs;
sqlite3_io_methods g_io;

struct CountFile {
  sqlite3_file base;
  sqlite3_file* real;  // the default VFS's file, stored right after this struct
  int flags;
};
sqlite3_file* real(sqlite3_file* f) { return reinterpret_cast<CountFile*>(f)->real; }

int f_close(sqlite3_file* f) { return real(f)->pMethods->xClose(real(f)); }
int f_read(sqlite3_file* f, void* b, int n, sqlite3_int64 o) { return real(f)->pMethods->xRead(real(f), b, n, o); }
int f_write(sqlite3_file* f, const void* b, int n, sqlite3_int64 o) {
  return real(f)->pMethods->xWrite(real(f), b, n, o);
}
int f_truncate(sqlite3_file* f, sqlite3_int64 n) { return real(f)->pMethods->xTruncate(real(f), n); }
int f_sync(sqlite3_file* f, int fl) {
  const int kind = reinterpret_cast<CountFile*>(f)->flags;
  if (kind & SQLITE_OPEN_MAIN_DB) g_syncs.db++;
  if (kind & SQLITE_OPEN_WAL) g_syncs.wal++;
  return real(f)->pMethods->xSync(real(f), fl);
}
int f_size(sqlite3_file* f, sqlite3_int64* n) { return real(f)->pMethods->xFileSize(real(f), n); }
int f_lock(sqlite3_file* f, int l) { return real(f)->pMethods->xLock(real(f), l); }
int f_unlock(sqlite3_file* f, int l) { return real(f)->pMethods->xUnlock(real(f), l); }
int f_reserved(sqlite3_file* f, int* r) { return real(f)->pMethods->xCheckReservedLock(real(f), r); }
int f_control(sqlite3_file* f, int op, void* a) { return real(f)->pMethods->xFileControl(real(f), op, a); }
int f_sector(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
int f_caps(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }
int f_shm_map(sqlite3_file* f, int i, int sz, int ext, void volatile** p) {
  return real(f)->pMethods->xShmMap(real(f), i, sz, ext, p);
}
int f_shm_lock(sqlite3_file* f, int o, int n, int fl) { return real(f)->pMethods->xShmLock(real(f), o, n, fl); }
void f_shm_barrier(sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); }
int f_shm_unmap(sqlite3_file* f, int del) { return real(f)->pMethods->xShmUnmap(real(f), del); }
int f_fetch(sqlite3_file* f, sqlite3_int64 o, int n, void** p) { return real(f)->pMethods->xFetch(real(f), o, n, p); }
int f_unfetch(sqlite3_file* f, sqlite3_int64 o, void* p) { return real(f)->pMethods->xUnfetch(real(f), o, p); }

int v_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out) {
  auto* c = reinterpret_cast<CountFile*>(f);
  c->real = reinterpret_cast<sqlite3_file*>(c + 1);
  c->real->pMethods = nullptr;
  c->flags = flags;
  int rc = g_base->xOpen(g_base, name, c->real, flags, out);
  c->base.pMethods = c->real->pMethods ? &g_io : nullptr;
  return rc;
}
int v_delete(sqlite3_vfs*, const char* n, int s) { return g_base->xDelete(g_base, n, s); }
int v_access(sqlite3_vfs*, const char* n, int fl, int* r) { return g_base->xAccess(g_base, n, fl, r); }
int v_full(sqlite3_vfs*, const char* n, int sz, char* out) { return g_base->xFullPathname(g_base, n, sz, out); }
int v_random(sqlite3_vfs*, int n, char* out) { return g_base->xRandomness(g_base, n, out); }
int v_sleep(sqlite3_vfs*, int us) { return g_base->xSleep(g_base, us); }
int v_time(sqlite3_vfs*, double* t) { return g_base->xCurrentTime(g_base, t); }
int v_error(sqlite3_vfs*, int n, char* out) { return g_base->xGetLastError(g_base, n, out); }
int v_time64(sqlite3_vfs*, sqlite3_int64* t) { return g_base->xCurrentTimeInt64(g_base, t); }

// Makes the counting VFS the default for the test's connections; the destructor puts the
// default back.
struct CountingVfs {
  CountingVfs() {
    g_base = sqlite3_vfs_find(nullptr);
    g_io = sqlite3_io_methods{3,          f_close,       f_read,      f_write,   f_truncate, f_sync, f_size,
                              f_lock,     f_unlock,      f_reserved,  f_control, f_sector,   f_caps, f_shm_map,
                              f_shm_lock, f_shm_barrier, f_shm_unmap, f_fetch,   f_unfetch};
    g_vfs = sqlite3_vfs{};
    g_vfs.iVersion = 2;
    g_vfs.szOsFile = static_cast<int>(sizeof(CountFile)) + g_base->szOsFile;
    g_vfs.mxPathname = g_base->mxPathname;
    g_vfs.zName = "gantry-test-counting";
    g_vfs.xOpen = v_open;
    g_vfs.xDelete = v_delete;
    g_vfs.xAccess = v_access;
    g_vfs.xFullPathname = v_full;
    g_vfs.xRandomness = v_random;
    g_vfs.xSleep = v_sleep;
    g_vfs.xCurrentTime = v_time;
    g_vfs.xGetLastError = v_error;
    g_vfs.xCurrentTimeInt64 = v_time64;
    sqlite3_vfs_register(&g_vfs, 1);
    g_syncs = {};
  }
  ~CountingVfs() {
    sqlite3_vfs_unregister(&g_vfs);
    sqlite3_vfs_register(g_base, 1);
  }
  // The syncs since the last call.
  Syncs take() {
    Syncs s = g_syncs;
    g_syncs = {};
    return s;
  }
};

using gantry::store::testing::new_rollout;

// A step that rewrites `slots` host slots of ~3 KB each (about one WAL page per slot).
store::StepWrite step(uint64_t id, int first, int slots, bool durable) {
  store::StepWrite w;
  w.rollout_id = id;
  w.phase = "running";
  w.state = nlohmann::json{{"service", "web"}, {"step", first}};
  for (int i = 0; i < slots; ++i) {
    w.slots.emplace_back(static_cast<uint32_t>(first + i), "{\"host_id\":\"host-" + std::to_string(first + i) +
                                                               "\",\"pad\":\"" + std::string(3000, 'x') + "\"}");
  }
  w.durable = durable;
  return w;
}

}  // namespace

// Each test: the counting VFS, a store in a temp dir with one rollout row, the syncs of opening
// it dropped.
class StoreSync : public ::testing::Test {
 protected:
  void open_store(int64_t wal_cap_pages = store::kWalCapPages) {
    auto opened = store::Store::open(dir.path() + "/c.db", wal_cap_pages);
    ASSERT_TRUE(opened) << opened.error().message;
    st = std::move(*opened);
    id = new_rollout(*st);
    vfs.take();
  }
  CountingVfs vfs;
  TempDir dir;
  std::unique_ptr<store::Store> st;
  uint64_t id = 0;
};

// SQLite's own checkpoint used to run every 10,000 WAL pages (two fsyncs, then one more for the
// restarted WAL's header): inside a 10,000-host rollout. Now nothing checkpoints below the cap:
// 16,000 pages of steps cost exactly one fsync per durable step and none of the database file.
TEST_F(StoreSync, NoCheckpointWhileWritingBelowTheCap) {
  ASSERT_NO_FATAL_FAILURE(open_store());
  int durable = 0;
  for (int i = 0; i < 160; ++i) {  // 160 steps x 100 slots: ~16,000 pages, past SQLite's old 10,000
    const bool d = i % 10 == 0;
    durable += d;
    ASSERT_TRUE(st->save_step(step(id, i * 100, 100, d)).ok());
  }
  const Syncs s = vfs.take();
  EXPECT_EQ(s.db, 0) << "a checkpoint ran while writing";
  EXPECT_EQ(s.wal, durable);
  EXPECT_GT(st->wal_backlog(), 16000);
}

// A checkpoint at rest: the WAL and the database are synced (2), and its small restart write
// syncs the new WAL header (1). After it, a durable step costs one fsync, as before it.
TEST_F(StoreSync, CheckpointAtRestLeavesOneFsyncPerDurableStep) {
  ASSERT_NO_FATAL_FAILURE(open_store());
  ASSERT_TRUE(st->save_step(step(id, 0, 50, true)).ok());
  ASSERT_GT(st->wal_backlog(), 50);
  vfs.take();

  ASSERT_TRUE(st->checkpoint().ok());
  Syncs s = vfs.take();
  EXPECT_EQ(s.db, 1);
  EXPECT_EQ(s.wal, 2);  // before copying, and the restarted WAL's header
  EXPECT_EQ(st->wal_backlog(), 0);
  EXPECT_EQ(st->checkpoints(), 1u);

  // Nothing new: a second call does nothing at all.
  ASSERT_TRUE(st->checkpoint().ok());
  EXPECT_EQ(vfs.take().total(), 0);
  EXPECT_EQ(st->checkpoints(), 1u);

  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(st->save_step(step(id, i * 50, 50, true)).ok());
    s = vfs.take();
    EXPECT_EQ(s.wal, 1) << "durable step " << i;
    EXPECT_EQ(s.db, 0) << "durable step " << i;
  }
  EXPECT_GT(st->wal_backlog(), 0);

  // Everything is still there after a reopen.
  st.reset();
  auto again = store::Store::open(dir.path() + "/c.db");
  ASSERT_TRUE(again) << again.error().message;
  auto row = (*again)->rollout(id);
  ASSERT_TRUE(row && row->has_value());
  EXPECT_EQ((**row).state["hosts"].size(), 200u);
}

// The cap: past it the WAL is checkpointed even while writing, so it cannot grow without bound.
TEST_F(StoreSync, WalPastItsCapIsCheckpointedAnyway) {
  ASSERT_NO_FATAL_FAILURE(open_store(/*wal_cap_pages=*/500));
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(st->save_step(step(id, i * 100, 100, true)).ok());
  const Syncs s = vfs.take();
  EXPECT_GE(s.db, 2) << "no checkpoint past the cap";
  EXPECT_GE(st->checkpoints(), 2u);
  // ~1,600 pages were written; the WAL file never held much more than the cap plus one step.
  std::error_code ec;
  EXPECT_LT(std::filesystem::file_size(dir.path() + "/c.db-wal", ec), 1000u * (4096 + 24));
}

// An operator command's audit row rides in the step it causes: one commit, one fsync, and the
// row is there after a reopen.
TEST_F(StoreSync, AuditRowRidesInTheStepsCommit) {
  {
    ASSERT_NO_FATAL_FAILURE(open_store());
    auto w = step(id, 0, 10, true);
    w.audit.push_back({0, 1234, "alice", "rollout.start", "web", "ok"});
    ASSERT_TRUE(st->save_step(w).ok());
    const Syncs s = vfs.take();
    EXPECT_EQ(s.wal, 1);
    EXPECT_EQ(s.db, 0);
  }
  st.reset();
  auto reopened = store::Store::open(dir.path() + "/c.db");
  ASSERT_TRUE(reopened) << reopened.error().message;
  auto log = (*reopened)->audit_log(10);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ((*log)[0].who, "alice");
  EXPECT_EQ((*log)[0].command, "rollout.start");
  EXPECT_EQ((*log)[0].decision, "ok");
  EXPECT_EQ((*log)[0].at, 1234);
}

// An audit row written alone (a refused command) is durable on its own, whatever the previous
// transaction's sync mode was.
TEST_F(StoreSync, LoneAuditRowIsDurableAfterALazyStep) {
  ASSERT_NO_FATAL_FAILURE(open_store());
  ASSERT_TRUE(st->save_step(step(id, 0, 1, false)).ok());
  vfs.take();
  ASSERT_TRUE(st->audit({0, 1, "bob", "rollout.pause", "web", "refused: role viewer < deployer"}).ok());
  EXPECT_EQ(vfs.take().wal, 1);
}
