// The `desired` table's rows (store internals): written by Store::put_desired and, with the
// step that ends a rollout, by Store::save_step.
#pragma once

#include "coordinator/store/sqlite.h"
#include "coordinator/store/store.h"

namespace gantry::store {

// INSERT OR REPLACE of one service's desired state, inside the caller's transaction.
void upsert_desired(Db& db, const DesiredRow& d);

}  // namespace gantry::store
