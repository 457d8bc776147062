#include "cli/plan_file.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

namespace gantry::cli {

namespace {
nlohmann::json convert(const YAML::Node& n, int depth) {
  if (depth > 16) throw std::runtime_error("nesting too deep");
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: always a string
      if (s == "true" || s == "yes") return true;
      if (s == "false" || s == "no") return false;
      if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos && s.size() < 18) return std::stoll(s);
      return s;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& x : n) a.push_back(convert(x, depth + 1));
      return a;
    }
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = convert(kv.second, depth + 1);
      return o;
    }
  }
  return nullptr;
}
}  // namespace

Expected<nlohmann::json> yaml_to_json(const std::string& text) {
  try {
    YAML::Node root = YAML::Load(text);
    auto j = convert(root, 0);
    if (!j.is_object()) return make_error("plan", "a plan file must be a YAML mapping");
    return j;
  } catch (const std::exception& e) {
    return make_error("plan", std::string("cannot parse YAML: ") + e.what());
  }
}

Expected<nlohmann::json> read_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error("plan", "cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = yaml_to_json(ss.str());
  if (!j) return make_error("plan", path + ": " + j.error().message);
  return j;
}

}  // namespace gantry::cli
