// Shared by the coordinator store's unit tests.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coordinator/store/store.h"

namespace gantry::store::testing {

// A fresh rollout row of service "web" to write steps for; its id.
inline uint64_t new_rollout(Store& st) {
  RolloutRow row;
  row.service = "web";
  row.version = "v2";
  row.phase = "running";
  row.created_by = "test";
  row.state = nlohmann::json::object();
  auto id = st.create_rollout(row);
  EXPECT_TRUE(id);
  return id ? *id : 0;
}

}  // namespace gantry::store::testing
