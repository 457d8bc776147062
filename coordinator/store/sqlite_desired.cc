// Desired state per service: the `desired` table.
#include <string>

#include "coordinator/store/desired_rows.h"
#include "coordinator/store/guard.h"
#include "coordinator/store/sqlite_store.h"

namespace gantry::store {

void upsert_desired(Db& db, const DesiredRow& d) {
  Stmt& s = db.cached(
      "INSERT OR REPLACE INTO desired (service, version, selector, converge, plan, rollout_id, held, note, "
      "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  s.bind(1, d.service)
      .bind(2, d.version)
      .bind(3, d.selector)
      .bind(4, d.converge)
      .bind(5, d.plan.dump())
      .bind(6, static_cast<int64_t>(d.rollout_id))
      .bind(7, static_cast<int64_t>(d.held ? 1 : 0))
      .bind(8, d.note)
      .bind(9, d.updated_at)
      .run();
  s.reset();
}

Expected<std::vector<DesiredRow>> SqliteStore::desired() {
  return guard("read desired state", [&]() -> Expected<std::vector<DesiredRow>> {
    Stmt s(db_->raw(),
           "SELECT service, version, selector, converge, plan, rollout_id, held, note, updated_at FROM desired "
           "ORDER BY service");
    std::vector<DesiredRow> out;
    while (s.step()) {
      DesiredRow d;
      d.service = s.col_text(0);
      d.version = s.col_text(1);
      d.selector = s.col_text(2);
      d.converge = s.col_text(3);
      d.plan = nlohmann::json::parse(s.col_text(4), nullptr, false);
      if (!d.plan.is_object()) d.plan = nlohmann::json::object();
      d.rollout_id = static_cast<uint64_t>(s.col_int(5));
      d.held = s.col_int(6) != 0;
      d.note = s.col_text(7);
      d.updated_at = s.col_int(8);
      out.push_back(std::move(d));
    }
    return out;
  });
}

Status SqliteStore::put_desired(const DesiredRow& d) {
  return guard("write desired state", [&]() -> Status {
    Txn t(*db_);
    upsert_desired(*db_, d);
    t.commit();
    return Status::Ok();
  });
}

}  // namespace gantry::store
