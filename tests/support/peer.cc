#include "tests/support/peer.h"

#include <gtest/gtest.h>

#include "tests/support/fleet.h"

namespace gantry::testing {

namespace {
const char* kPython = "/usr/bin/python3";
}

bool have_python_zmq() {
  static const bool ok = run({kPython, "-c", "import zmq"}, 30000).exit_code == 0;
  return ok;
}

std::vector<std::string> peer_argv(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kPython, source_dir() + "/tests/integration/hostile_client.py"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

nlohmann::json run_peer(const std::vector<std::string>& args, int timeout_ms) {
  const auto r = run(peer_argv(args), timeout_ms);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto end = r.out.find_last_not_of('\n');
  auto start = end == std::string::npos ? std::string::npos : r.out.rfind('\n', end);
  std::string line = r.out.substr(start == std::string::npos ? 0 : start + 1);
  try {
    return nlohmann::json::parse(line);
  } catch (const std::exception&) {
    ADD_FAILURE() << "hostile client output is not JSON: " << r.out << r.err;
    return nlohmann::json::object();
  }
}

}  // namespace gantry::testing
