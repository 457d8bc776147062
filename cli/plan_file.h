// Plan files: YAML as operators write them, turned into the JSON the coordinator validates.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "common/util/expected.h"

namespace gantry::cli {

// Reads a YAML file into JSON (ints, bools and strings keep their types). Top-level keys
// `service`, `version`, `selector`, `release` and `reason` are rollout arguments; every
// other key belongs to the plan.
Expected<nlohmann::json> read_yaml_file(const std::string& path);
Expected<nlohmann::json> yaml_to_json(const std::string& text);

}  // namespace gantry::cli
