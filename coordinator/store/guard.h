// Store internals: how each Store method turns SQLite and stored-JSON errors into an Error.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "common/util/expected.h"
#include "coordinator/store/sqlite.h"

namespace gantry::store {

// Runs f, turning SqliteError (and JSON errors from stored text) into an Error value.
template <typename F>
auto guard(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const SqliteError& e) {
    return make_error("store", std::string(what) + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {
    return make_error("store", std::string(what) + ": corrupt record: " + e.what());
  }
}

}  // namespace gantry::store
