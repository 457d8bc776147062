// Every `gantry` help works without a coordinator or keys and exits 0; usage errors exit 2 and
// never echo control characters from the command line. The same for the daemons' --help.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/fleet.h"

using namespace gantry::testing;

namespace {

// No coordinator is listening there, and no key is configured: help must not need either.
const std::map<std::string, std::string> kNoCoordinator = {{"GANTRY_COORDINATOR", "tcp://127.0.0.1:9"},
                                                           {"GANTRY_KEY", ""},
                                                           {"GANTRY_COORDINATOR_KEY", ""},
                                                           {"HOME", "/nonexistent"}};

CmdResult run_gantry(std::vector<std::string> args) {
  args.insert(args.begin(), bin_dir() + "/cli/gantry");
  return run(args, 30000, kNoCoordinator);
}

}  // namespace

TEST(CliHelp, EveryGroupAndCommandPrintsHelpAndExitsZero) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--help"}, "Usage: gantry [global options] COMMAND"},
      {{"keys", "--help"}, "Usage: gantry keys COMMAND"},
      {{"keys", "-h"}, "Usage: gantry keys COMMAND"},
      {{"keys", "accept", "--help"}, "Usage: gantry keys COMMAND"},
      {{"keys", "add-operator", "--help"}, "add-operator NAME PUBFILE --role"},
      {{"rollout", "--help"}, "Usage: gantry rollout COMMAND"},
      {{"rollout", "start", "--help"}, "Usage: gantry rollout start"},
      {{"rollout", "plan", "--help"}, "Usage: gantry rollout plan"},
      {{"rollout", "watch", "--help"}, "Usage: gantry rollout watch"},
      {{"rollout", "show", "--help"}, "Usage: gantry rollout show ID"},
      {{"rollout", "pause", "--help"}, "Usage: gantry rollout pause"},
      {{"release", "--help"}, "Usage: gantry release COMMAND"},
      {{"release", "upload", "--help"}, "Usage: gantry release upload"},
      {{"release", "sign", "--help"}, "Usage: gantry release sign"},
      {{"release", "keygen", "--help"}, "Usage: gantry release keygen"},
      {{"hosts", "--help"}, "Usage: gantry hosts"},
      {{"status", "--help"}, "Usage: gantry status"},
      {{"history", "--help"}, "Usage: gantry history"},
      {{"audit", "--help"}, "Usage: gantry audit"},
      {{"rollback", "--help"}, "Usage: gantry rollback"},
  };
  for (const auto& [args, want] : cases) {
    auto r = run_gantry(args);
    std::string shown;
    for (const auto& a : args) shown += a + " ";
    EXPECT_EQ(r.exit_code, 0) << shown << r.out << r.err;
    EXPECT_NE(r.out.find(want), std::string::npos) << shown << r.out;
  }
}

TEST(CliHelp, UsageErrorsExitTwoAndEscapeWhatTheyEcho) {
  for (std::vector<std::string> args : {std::vector<std::string>{"keys"},
                                        {"keys", "frobnicate"},
                                        {"rollout", "fly"},
                                        {"bogus\x1b]52;c;eA==\x07"},
                                        {"--timeout-ms", "5\x1b[2J", "hosts"}}) {
    auto r = run_gantry(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
    EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\x07'), std::string::npos) << r.err;
  }
  auto r = run_gantry({"bogus\x1b[31m"});
  EXPECT_NE(r.err.find("unknown command: bogus\\x1b[31m"), std::string::npos) << r.err;
}

TEST(CliHelp, DaemonsPrintHelpWithoutKeysOrConfig) {
  auto c = run({bin_dir() + "/coordinator/gantry-coordinator", "--help"}, 30000);
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("--agent-endpoint"), std::string::npos) << c.out;
  auto a = run({bin_dir() + "/agent/gantry-agent", "--help"}, 30000);
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_NE(a.out.find("[service.NAME]"), std::string::npos) << a.out;
  auto s = run({bin_dir() + "/agent/gantry-agent", "state", "--help"}, 30000);
  EXPECT_EQ(s.exit_code, 0) << s.err;
  auto bad = run({bin_dir() + "/coordinator/gantry-coordinator", "--io-threads", "9\x1b[2J"}, 30000);
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("--io-threads must be 1..16, got 9\\x1b[2J"), std::string::npos) << bad.err;
}
