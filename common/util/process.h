// Running local commands (restart commands, local checks, hooks) behind an interface.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry {

struct ProcessResult {
  int exit_code = -1;      // exit status, or 128+signal when killed by a signal
  bool timed_out = false;  // killed because it ran past its timeout
  std::string output;      // stdout+stderr, at most 64 KiB (the tail is kept)
};

// A shell command made ready ahead of time (ProcessRunner::prepare_shell) and run on start().
// Destroyed before start(), the command never runs.
class PreparedShell {
 public:
  virtual ~PreparedShell() = default;
  // Runs the command now. Call once, on the thread that prepared it.
  virtual void start() = 0;
  // After start(), on any one thread: waits until the shell exits or its timeout (counted from
  // start()) kills it; as run_shell().
  virtual Expected<ProcessResult> wait() = 0;
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Runs `/bin/sh -c command` with extra environment; kills its process group at the timeout.
  // Returns when the shell exits, even if it left daemons behind holding its output pipe.
  virtual Expected<ProcessResult> run_shell(const std::string& command, const std::map<std::string, std::string>& env,
                                            Millis timeout_ms) = 0;
  // The same command, made ready now and run on start(). By default nothing happens before
  // start() and wait() is run_shell(); RealProcessRunner starts the shell itself up front.
  virtual std::unique_ptr<PreparedShell> prepare_shell(const std::string& command,
                                                       const std::map<std::string, std::string>& env,
                                                       Millis timeout_ms);
};

class RealProcessRunner final : public ProcessRunner {
 public:
  Expected<ProcessResult> run_shell(const std::string& command, const std::map<std::string, std::string>& env,
                                    Millis timeout_ms) override;
  // Spawns `/bin/sh` at once and lets it start up (exec, dynamic loading: most of a short
  // command's cost) while the caller goes on; the shell then blocks reading a private pipe
  // (fd 3) and, on start(), closes it and evaluates the command exactly as `sh -c` would,
  // in the same process. If the caller drops it unstarted (or dies), the pipe ends, the shell
  // exits 125 without running anything, and is reaped.
  std::unique_ptr<PreparedShell> prepare_shell(const std::string& command,
                                               const std::map<std::string, std::string>& env,
                                               Millis timeout_ms) override;
};

}  // namespace gantry
