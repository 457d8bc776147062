// A second, independent implementation of the agent/operator side of the protocol:
// tests/integration/hostile_client.py (Debian's python3-zmq and a hand-written msgpack encoder,
// no code shared with Gantry). Tests use it to play peers Gantry's own code would never be:
// hostile ones, and older agents.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gantry::testing {

// True if /usr/bin/python3 can import zmq (scripts/install-deps installs python3-zmq).
bool have_python_zmq();

// Runs `hostile_client.py args...` (bounded by timeout_ms) and returns the JSON object it prints
// on its last output line. A non-zero exit or output that is not JSON is a test failure
// (ADD_FAILURE) and gives an empty object.
nlohmann::json run_peer(const std::vector<std::string>& args, int timeout_ms = 120000);

// The command line run_peer uses, for tests that run the peer in the background.
std::vector<std::string> peer_argv(const std::vector<std::string>& args);

}  // namespace gantry::testing
