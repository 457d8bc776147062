// The daemons under systemd's eyes: the sd_notify protocol (READY=1, WATCHDOG=1, STOPPING=1)
// over a NOTIFY_SOCKET the test binds, journald-friendly log lines, and `systemd-analyze verify`
// of both unit files.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/support/fleet.h"

using gantry::testing::bin_dir;
using gantry::testing::Fleet;
using gantry::testing::source_dir;
using gantry::testing::TempDir;
using gantry::testing::wait_until;

namespace {

// A bound AF_UNIX datagram socket collecting sd_notify messages (one datagram, lines KEY=VALUE).
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) throw std::runtime_error("notify socket path too long: " + path);
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("cannot bind " + path);
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

  // Reads what arrived within `ms` into lines().
  void drain(int ms) {
    pollfd p{fd_, POLLIN, 0};
    while (::poll(&p, 1, ms) > 0) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      std::istringstream in(std::string(buf, static_cast<size_t>(n)));
      std::string line;
      while (std::getline(in, line)) lines_.push_back(line);
      ms = 0;
    }
  }
  int count(const std::string& msg) const {
    int n = 0;
    for (const auto& l : lines_) n += l == msg;
    return n;
  }
  // Waits (bounded) until `msg` arrived at least `times` times.
  bool wait_for(const std::string& msg, int times, int timeout_ms) {
    return wait_until(
        [&] {
          drain(20);
          return count(msg) >= times;
        },
        timeout_ms, 1);
  }
  std::string dump() const {
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> lines_;
};

// Sets an environment variable for one scope (the coordinator inherits the test's environment).
class ScopedEnv {
 public:
  ScopedEnv(const char* k, const std::string& v) : k_(k) { ::setenv(k, v.c_str(), 1); }
  ~ScopedEnv() { ::unsetenv(k_); }

 private:
  const char* k_;
};

std::string find_program(const std::string& name) {
  for (const char* d : {"/usr/bin", "/bin", "/usr/sbin", "/sbin"}) {
    std::string p = std::string(d) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

}  // namespace

TEST(Systemd, BothDaemonsSendReadyWatchdogAndStopping) {
  Fleet f(1);
  NotifySocket coord_sock(f.dir() + "/coord.notify");
  NotifySocket agent_sock(f.dir() + "/agent.notify");
  {
    // A 200 ms watchdog: the daemons must ping every 100 ms.
    ScopedEnv a("NOTIFY_SOCKET", coord_sock.path());
    ScopedEnv b("WATCHDOG_USEC", "200000");
    f.start_coordinator();
  }
  ASSERT_EQ(::getenv("NOTIFY_SOCKET"), nullptr);
  f.start_agent(0, {{"NOTIFY_SOCKET", agent_sock.path()}, {"WATCHDOG_USEC", "200000"}});

  EXPECT_TRUE(coord_sock.wait_for("READY=1", 1, 20000)) << coord_sock.dump() << f.diagnostics();
  EXPECT_TRUE(coord_sock.wait_for("WATCHDOG=1", 3, 20000)) << coord_sock.dump() << f.diagnostics();
  EXPECT_TRUE(agent_sock.wait_for("READY=1", 1, 20000)) << agent_sock.dump() << f.diagnostics();
  EXPECT_TRUE(agent_sock.wait_for("WATCHDOG=1", 3, 20000)) << agent_sock.dump() << f.diagnostics();
  // READY=1 comes once, before any watchdog ping.
  EXPECT_EQ(coord_sock.count("READY=1"), 1) << coord_sock.dump();
  EXPECT_EQ(agent_sock.count("READY=1"), 1) << agent_sock.dump();

  EXPECT_EQ(f.kill_agent(0, SIGTERM), 0) << f.diagnostics();
  EXPECT_TRUE(agent_sock.wait_for("STOPPING=1", 1, 5000)) << agent_sock.dump();
  EXPECT_EQ(f.kill_coordinator(SIGTERM), 0) << f.diagnostics();
  EXPECT_TRUE(coord_sock.wait_for("STOPPING=1", 1, 5000)) << coord_sock.dump();
}

TEST(Systemd, WithoutWatchdogThereAreNoPings) {
  Fleet f(1);
  NotifySocket agent_sock(f.dir() + "/agent.notify");
  f.start_coordinator();
  f.start_agent(0, {{"NOTIFY_SOCKET", agent_sock.path()}});
  ASSERT_TRUE(agent_sock.wait_for("READY=1", 1, 20000)) << agent_sock.dump() << f.diagnostics();
  EXPECT_EQ(f.kill_agent(0, SIGTERM), 0);
  ASSERT_TRUE(agent_sock.wait_for("STOPPING=1", 1, 5000)) << agent_sock.dump();
  EXPECT_EQ(agent_sock.count("WATCHDOG=1"), 0) << agent_sock.dump();
}

// Under journald (JOURNAL_STREAM set) lines carry a <N> priority and no timestamp of their own.
TEST(Systemd, LogsAreJournaldFriendlyUnderSystemd) {
  Fleet f(1);
  f.start_coordinator();
  f.start_agent(0, {{"JOURNAL_STREAM", "8:12345"}});
  ASSERT_TRUE(
      wait_until([&] { return f.agent_log(0).find("welcomed by the coordinator") != std::string::npos; }, 20000))
      << f.diagnostics();
  std::istringstream in(f.agent_log(0));
  std::string line;
  int ours = 0;
  const std::regex stamp("\\d{4}-\\d\\d-\\d\\d[T ]\\d\\d:\\d\\d");
  const std::regex journal_line("^<[2-7]>(trace|debug|info|warning|error|critical) \\[[a-z.]+\\] .*");
  while (std::getline(in, line)) {
    if (!std::regex_match(line, journal_line)) continue;
    ++ours;
    EXPECT_FALSE(std::regex_search(line, stamp)) << line;
  }
  EXPECT_GE(ours, 2) << f.agent_log(0);
  // Without JOURNAL_STREAM (the coordinator here) lines start with a timestamp.
  EXPECT_TRUE(std::regex_search(f.coordinator_log(), std::regex("(^|\n)\\d{4}-\\d\\d-\\d\\dT"))) << f.coordinator_log();
}

// systemd-analyze verify needs ExecStart= to exist: check copies of the units whose ExecStart
// points at the binaries of this build, and fail on any warning, not only on errors.
TEST(Systemd, UnitFilesPassSystemdAnalyzeVerify) {
  const std::string analyze = find_program("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze not installed (Debian package systemd; scripts/install-deps)";
  TempDir dir("gantry-units");
  std::vector<std::string> argv = {analyze, "verify"};
  for (const std::string& daemon : {std::string("coordinator"), std::string("agent")}) {
    const std::string unit = "gantry-" + daemon + ".service";
    std::string text = gantry::testing::read_file(source_dir() + "/systemd/" + unit);
    ASSERT_FALSE(text.empty()) << unit;
    for (const char* key : {"Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
                            "ProtectSystem=", "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=", "/etc/gantry/"}) {
      EXPECT_NE(text.find(key), std::string::npos) << unit << " lacks " << key;
    }
    const std::string installed = "/usr/sbin/gantry-" + daemon;
    const std::string built = bin_dir() + "/" + daemon + "/gantry-" + daemon;
    auto at = text.find("ExecStart=" + installed);
    ASSERT_NE(at, std::string::npos) << unit;
    text.replace(at + 10, installed.size(), built);
    std::ofstream(dir.sub(unit)) << text;
    argv.push_back(dir.sub(unit));
  }
  auto r = gantry::testing::run(argv, 60000, {{"SYSTEMD_LOG_COLOR", "0"}, {"SYSTEMD_PAGER", ""}});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out + r.err, "") << "systemd-analyze verify has findings";
  // The coordinator's descriptor limit covers 10,000 agent connections.
  std::smatch m;
  std::string coord = gantry::testing::read_file(source_dir() + "/systemd/gantry-coordinator.service");
  ASSERT_TRUE(std::regex_search(coord, m, std::regex("\nLimitNOFILE=(\\d+)\n")));
  EXPECT_GE(std::stoi(m[1]), 20000);
}
