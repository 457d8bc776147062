// ProcessRunner: run_shell, and prepare_shell (a shell started ahead of its command, which it
// runs only on start()) — with real /bin/sh processes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <thread>

#include "agent_test_util.h"
#include "common/util/process.h"

using namespace gantry;
using namespace gantry::agent::testing;

namespace {

// No child of this test process is left, exited or not.
bool no_children_left() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

Expected<ProcessResult> run_prepared(ProcessRunner& runner, const std::string& cmd,
                                     const std::map<std::string, std::string>& env = {}, Millis timeout_ms = 10000) {
  auto p = runner.prepare_shell(cmd, env, timeout_ms);
  p->start();
  return p->wait();
}

}  // namespace

TEST(PreparedShell, RunsItsCommandOnlyOnceStarted) {
  TempDir t;
  RealProcessRunner runner;
  const std::string f = t / "f";
  write_text(f, "before");
  auto p = runner.prepare_shell("cat \"$F\"", {{"F", f}}, 10000);
  // Whatever the shell has done by now, it has not run the command: it reads what is written
  // after prepare_shell() and before start().
  write_text(f, "after");
  p->start();
  auto r = p->wait();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->output, "after");
  EXPECT_TRUE(no_children_left());
}

TEST(PreparedShell, DroppedUnstartedItRunsNothingAndIsReaped) {
  TempDir t;
  RealProcessRunner runner;
  const std::string f = t / "ran";
  for (int i = 0; i < 5; ++i) {
    auto p = runner.prepare_shell("touch \"$F\"", {{"F", f}}, 10000);
    if (i % 2) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // also once it waits on the gate
    p.reset();
    EXPECT_TRUE(no_children_left()) << "round " << i;
  }
  EXPECT_FALSE(std::filesystem::exists(f)) << "a shell never started must never run its command";
}

TEST(PreparedShell, EvaluatesTheCommandAsShDashCDoes) {
  RealProcessRunner runner;
  const std::map<std::string, std::string> env = {{"GANTRY_VERSION", "v9"}};
  for (const std::string cmd : {
           "exit 3",
           "echo \"$0\" $#",
           "echo a; echo b >&2; false",
           "f() { echo \"x$1\"; }\nf y\nf z",
           "printf '%s|' \"a b\" 'c\"d' $((1+2)) \"$GANTRY_VERSION\"",
           "set -e; false; echo unreachable",
           "if then fi",
           "cat; echo stdin-done",
           "",
           "# only a comment",
           "trap 'echo trapped' EXIT; exit 4",
       }) {
    auto want = runner.run_shell(cmd, env, 10000);
    auto got = run_prepared(runner, cmd, env);
    ASSERT_TRUE(want.ok() && got.ok()) << cmd;
    EXPECT_EQ(got->exit_code, want->exit_code) << cmd;
    EXPECT_FALSE(got->timed_out) << cmd;
    if (cmd != "if then fi") {
      EXPECT_EQ(got->output, want->output) << cmd;  // a syntax error's message names its line
    } else {
      EXPECT_NE(got->exit_code, 0);
      EXPECT_NE(got->output.find("Syntax error"), std::string::npos) << got->output;
    }
  }
}

TEST(PreparedShell, TheCommandSeesNeitherTheGateNorTheVariableThatCarriedIt) {
  RealProcessRunner runner;
  auto r = run_prepared(runner,
                        "[ -e /dev/fd/3 ] && echo fd3-open || echo fd3-closed; env | grep -c GANTRY_GATED_COMMAND; "
                        "echo \"[${gantry_gate-unset}]\"");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "fd3-closed\n0\n[unset]\n");
}

TEST(PreparedShell, ItsTimeoutCountsFromStartAndKillsTheGroup) {
  TempDir t;
  RealProcessRunner runner;
  auto p = runner.prepare_shell("sleep 30 & sleep 30; echo not-killed", {}, 200);
  p->start();
  auto r = p->wait();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->exit_code, 128 + SIGKILL);
  EXPECT_EQ(r->output.find("not-killed"), std::string::npos);
}

TEST(PreparedShell, WaitingBeforeStartOrTwiceIsAnError) {
  RealProcessRunner runner;
  auto p = runner.prepare_shell("true", {}, 10000);
  EXPECT_FALSE(p->wait().ok()) << "not started";
  p->start();
  EXPECT_TRUE(p->wait().ok());
  EXPECT_FALSE(p->wait().ok()) << "already waited for";
  EXPECT_TRUE(no_children_left());
}

namespace {

// A runner that only counts: the default prepare_shell() runs nothing before wait().
class CountingRunner final : public ProcessRunner {
 public:
  int runs = 0;
  std::string last;
  Expected<ProcessResult> run_shell(const std::string& command, const std::map<std::string, std::string>&,
                                    Millis) override {
    ++runs;
    last = command;
    ProcessResult r;
    r.exit_code = 0;
    return r;
  }
};

}  // namespace

TEST(PreparedShell, ByDefaultItIsRunShellCalledFromWait) {
  CountingRunner runner;
  runner.prepare_shell("a", {}, 1000).reset();
  EXPECT_EQ(runner.runs, 0) << "dropped: nothing ran";
  auto p = runner.prepare_shell("b", {}, 1000);
  p->start();
  EXPECT_EQ(runner.runs, 0);
  ASSERT_TRUE(p->wait().ok());
  EXPECT_EQ(runner.runs, 1);
  EXPECT_EQ(runner.last, "b");
}
