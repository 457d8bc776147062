// Running local commands (restart commands, local checks, hooks) behind an interface.
#pragma once

#include <map>
#include <string>

#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry {

struct ProcessResult {
  int exit_code = -1;      // exit status, or 128+signal when killed by a signal
  bool timed_out = false;  // killed because it ran past its timeout
  std::string output;      // stdout+stderr, at most 64 KiB (the tail is kept)
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Runs `/bin/sh -c command` with extra environment; kills its process group at the timeout.
  // Returns when the shell exits, even if it left daemons behind holding its output pipe.
  virtual Expected<ProcessResult> run_shell(const std::string& command,
                                            const std::map<std::string, std::string>& env,
                                            Millis timeout_ms) = 0;
};

class RealProcessRunner final : public ProcessRunner {
 public:
  Expected<ProcessResult> run_shell(const std::string& command,
                                    const std::map<std::string, std::string>& env,
                                    Millis timeout_ms) override;
};

}  // namespace gantry
