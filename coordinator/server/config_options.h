// gantry-coordinator's command line and config file, parsed (Boost.Program_options: command line
// first, then the INI file it names) and checked into a Config, so main() only wires and runs.
#pragma once

#include <string>
#include <vector>

#include "common/util/expected.h"
#include "coordinator/server/config.h"

namespace gantry::coordinator {

struct ConfigOptions {
  bool help = false;     // --help was given; `text` holds the usage
  bool version = false;  // --version was given
  std::string text;
  Config config;
  std::string log_level = "info";
  // Settings that were accepted but are worth a log line once logging is set up.
  std::vector<std::string> warnings;
};

// Parses the arguments after argv[0] and the config file --config names, checks every value
// (endpoints, addresses, periods, names) and reads the key files named by --server-key,
// --admin-key and --accept-agent-key. An error is a usage error (exit 2); its message names the
// option and the value, with control characters escaped.
Expected<ConfigOptions> parse_config_options(const std::vector<std::string>& args);

}  // namespace gantry::coordinator
