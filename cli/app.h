// The `gantry` command line: parses a command, talks to the coordinator, prints the result.
#pragma once

#include <string>
#include <vector>

namespace gantry::cli {

// Exit codes scripts can trust.
enum ExitCode {
  kOk = 0,
  kRolloutFailed = 1,  // a rollout we waited for ended failed, rolled back or aborted
  kUsage = 2,          // bad command line
  kRefused = 3,        // the coordinator refused the request (bad argument, conflict, ...)
  kUnreachable = 4,    // no answer from the coordinator
};

int run(const std::vector<std::string>& args);

}  // namespace gantry::cli
