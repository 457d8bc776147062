// Shared by the coordinator's unit tests: a store on a temp file, fake order and signal sinks,
// and a way to make the store's writes fail (a trigger added from a second SQLite connection).
#pragma once

#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "common/util/clock.h"
#include "coordinator/server/rollout_executor.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator::testing {

// A directory removed when the test ends.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "gantry-coord-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

struct FakeOrders : OrderSink {
  std::set<std::string> unreachable;  // hosts with no greeted connection now
  struct Sent {
    std::string host_id;
    proto::Order order;
  };
  std::vector<Sent> sent;
  bool send_order(const std::string& host_id, const proto::Order& order) override {
    if (unreachable.count(host_id)) return false;
    sent.push_back({host_id, order});
    return true;
  }
  // Orders sent since the last call.
  std::vector<Sent> take() { return std::exchange(sent, {}); }
};

struct FakeSignals : SignalSink {
  struct Sent {
    rollout::SignalKind kind;
    uint64_t rollout_id;
    std::string service;
  };
  std::vector<Sent> sent;
  Status broadcast(rollout::SignalKind kind, uint64_t rollout_id, const std::string& service) override {
    sent.push_back({kind, rollout_id, service});
    return Status::Ok();
  }
};

// Makes every write to `table` fail until the returned guard is destroyed: a trigger that
// raises, added through a second connection to the same database file (real SQLite errors,
// no fake store).
class FailingWrites {
 public:
  FailingWrites(const std::string& db_path, const std::string& table) {
    EXPECT_EQ(sqlite3_open(db_path.c_str(), &db_), SQLITE_OK);
    name_ = "gantry_test_fail_" + table;
    for (const char* op : {"INSERT", "UPDATE"}) {
      std::string sql = "CREATE TRIGGER " + name_ + "_" + op + " BEFORE " + op + " ON " + table +
                        " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;";
      EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
    }
  }
  ~FailingWrites() {
    for (const char* op : {"INSERT", "UPDATE"}) {
      std::string sql = "DROP TRIGGER IF EXISTS " + name_ + "_" + op + ";";
      sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    }
    sqlite3_close(db_);
  }
  FailingWrites(const FailingWrites&) = delete;
  FailingWrites& operator=(const FailingWrites&) = delete;

 private:
  sqlite3* db_ = nullptr;
  std::string name_;
};

inline std::unique_ptr<store::Store> open_store(const std::string& path) {
  auto st = store::Store::open(path);
  EXPECT_TRUE(st) << (st ? "" : st.error().message);
  return st ? std::move(*st) : nullptr;
}

// A release row for `service` `version` (the executor needs one to build orders).
inline void put_release(store::Store& st, const std::string& service, const std::string& version) {
  store::ReleaseRow r;
  r.service = service;
  r.version = version;
  r.sha256 = std::string(64, version.empty() ? '0' : 'a');
  r.size = 1234;
  r.path = "/nonexistent/" + version;
  r.created_at = 1;
  ASSERT_TRUE(st.put_release(r).ok());
}

inline std::vector<rollout::HostCandidate> hosts(int n, const std::string& running = "v1") {
  std::vector<rollout::HostCandidate> out;
  for (int i = 1; i <= n; ++i) out.push_back({"web-" + std::to_string(i), {{"role", "web"}}, running, true});
  return out;
}

}  // namespace gantry::coordinator::testing
