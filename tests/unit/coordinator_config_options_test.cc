// gantry-coordinator's options (coordinator/server/config_options): command line first, then the
// INI file; every value checked where it is parsed, errors naming the option and the value.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent_test_util.h"
#include "common/security/keys.h"
#include "coordinator/server/config_options.h"

using namespace gantry;
using namespace gantry::coordinator;
using gantry::agent::testing::TempDir;
using gantry::agent::testing::write_text;

namespace {

std::string error_of(const Expected<ConfigOptions>& o) { return o.ok() ? std::string("(parsed)") : o.error().message; }

// Insecure, so that no key files are needed unless a test wants them.
Expected<ConfigOptions> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "--insecure-dev");
  return parse_config_options(args);
}

// Writes a CURVE keypair PREFIX.key / PREFIX.pub under `t` and returns PREFIX.
std::string keypair(const TempDir& t, const std::string& name) {
  auto kp = security::generate_curve_keypair();
  EXPECT_TRUE(kp.ok());
  const std::string prefix = t / name;
  EXPECT_TRUE(security::write_curve_keypair(prefix, *kp).ok());
  return prefix;
}

}  // namespace

TEST(CoordinatorConfigOptions, DefaultsMatchTheConfigStruct) {
  auto o = parse({});
  ASSERT_TRUE(o.ok()) << error_of(o);
  const Config defaults;
  EXPECT_EQ(o->config.state_dir, defaults.state_dir);
  EXPECT_EQ(o->config.agent_endpoint, defaults.agent_endpoint);
  EXPECT_EQ(o->config.http_address, defaults.http_address);
  EXPECT_EQ(o->config.heartbeat_interval_ms, defaults.heartbeat_interval_ms);
  EXPECT_EQ(o->config.io_threads, defaults.io_threads);
  EXPECT_EQ(o->config.udp_heartbeat, "auto");
  EXPECT_EQ(o->log_level, "info");
  EXPECT_TRUE(o->config.insecure_dev);
  EXPECT_TRUE(o->warnings.empty());
}

TEST(CoordinatorConfigOptions, CommandLineWinsOverTheFile) {
  TempDir t;
  write_text(
      t / "c.conf",
      "# comment\nstate-dir = /var/lib/from-file\nagent-endpoint = tcp://0.0.0.0:7600\nheartbeat-interval-ms = 500\n"
      "heartbeat-misses = 4\nhttp-address =\nudp-heartbeat = off\nlog-level = debug\nio-threads = 2\n");
  auto o = parse({"--config", t / "c.conf", "--state-dir", "/srv/cli", "--io-threads", "5"});
  ASSERT_TRUE(o.ok()) << error_of(o);
  EXPECT_EQ(o->config.state_dir, "/srv/cli");
  EXPECT_EQ(o->config.agent_endpoint, "tcp://0.0.0.0:7600");
  EXPECT_EQ(o->config.heartbeat_interval_ms, 500u);
  EXPECT_EQ(o->config.heartbeat_misses, 4u);
  EXPECT_EQ(o->config.http_address, "");
  EXPECT_EQ(o->config.udp_heartbeat, "off");
  EXPECT_EQ(o->config.io_threads, 5u);
  EXPECT_EQ(o->log_level, "debug");
}

TEST(CoordinatorConfigOptions, ThePackagedExampleParses) {
  // Relative __FILE__: relative to the build directory, the parent of this binary's directory.
  std::string here = __FILE__;
  if (here.front() != '/')
    here = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path().string() + "/" + here;
  const std::string example = here.substr(0, here.rfind("/tests/unit/")) + "/packaging/examples/coordinator.conf";
  // Its server-key is a path on a real host; give an insecure run and leave it out.
  TempDir t;
  std::ifstream in(example);
  ASSERT_TRUE(in) << example;
  std::string text, line;
  while (std::getline(in, line))
    if (line.rfind("server-key", 0) != 0) text += line + "\n";
  write_text(t / "c.conf", text);
  auto o = parse({"--config", t / "c.conf"});
  ASSERT_TRUE(o.ok()) << error_of(o);
  EXPECT_EQ(o->config.operator_endpoint, "tcp://0.0.0.0:7602");
  EXPECT_EQ(o->config.coordinator_heartbeat_ms, 10000u);
}

TEST(CoordinatorConfigOptions, NumbersInRangeAndDigitsOnly) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--io-threads", "0"}, "--io-threads must be 1..16, got 0"},
      {{"--io-threads", "1000"}, "--io-threads must be 1..16, got 1000"},
      {{"--restart-grace-ms", "-5"}, "--restart-grace-ms must be 0..86400000 (a day), got -5"},
      {{"--order-resend-ms", "0"}, "--order-resend-ms must be 10..3600000, got 0"},
      {{"--heartbeat-interval-ms", "0"}, "--heartbeat-interval-ms must be 1..3600000, got 0"},
      {{"--heartbeat-interval-ms", "1s"}, "--heartbeat-interval-ms must be 1..3600000, got 1s"},
      {{"--heartbeat-misses", "+3"}, "--heartbeat-misses must be 1..1000, got +3"},
      {{"--coordinator-heartbeat-ms", "99999999999999999999"},
       "--coordinator-heartbeat-ms must be 0..3600000, got 99999999999999999999"},
      {{"--heartbeat-misses", ""}, "--heartbeat-misses must be 1..1000, got "},
  };
  for (const auto& [args, want] : bad) EXPECT_EQ(error_of(parse(args)), want) << args[0] << " " << args[1];
  auto low = parse({"--heartbeat-interval-ms", "2000", "--coordinator-heartbeat-ms", "1000"});
  ASSERT_TRUE(low.ok()) << error_of(low);
  ASSERT_EQ(low->warnings.size(), 1u);
  EXPECT_EQ(low->warnings[0],
            "--coordinator-heartbeat-ms 1000 is below --heartbeat-interval-ms 2000; using the interval");
}

TEST(CoordinatorConfigOptions, EndpointsAndAddressesAreCheckedWhereTheyAreGiven) {
  for (const char* good :
       {"tcp://127.0.0.1:*", "tcp://*:7600", "tcp://[::1]:0", "tcp://eth0:7600", "ipc:///run/gantry/agents"}) {
    auto o = parse({"--agent-endpoint", good});
    EXPECT_TRUE(o.ok()) << good << ": " << error_of(o);
  }
  EXPECT_EQ(error_of(parse({"--operator-endpoint", "tcp://nonsense"})),
            "--operator-endpoint: endpoint 'tcp://nonsense' has no port (want tcp://HOST:PORT, HOST or PORT may be *)");
  EXPECT_EQ(error_of(parse({"--pub-endpoint", "pgm://eth0;239.1.1.1:5555"})),
            "--pub-endpoint: endpoint 'pgm://eth0;239.1.1.1:5555' is not tcp:// or ipc:// (want tcp://HOST:PORT, HOST "
            "or PORT may be *)");
  EXPECT_EQ(error_of(parse({"--agent-endpoint", "tcp://h:70000"})),
            "--agent-endpoint: endpoint 'tcp://h:70000' has no port between 0 and 65535 (want tcp://HOST:PORT, HOST or "
            "PORT may be *)");
  EXPECT_EQ(
      error_of(parse({"--agent-endpoint", "tcp://a b:1"})),
      "--agent-endpoint: endpoint 'tcp://a b:1' has a malformed host (want tcp://HOST:PORT, HOST or PORT may be *)");
  for (const char* good : {"127.0.0.1:0", "[::1]:7680", "localhost:7680", "0.0.0.0:9"}) {
    auto o = parse({"--http-address", good});
    EXPECT_TRUE(o.ok()) << good << ": " << error_of(o);
  }
  EXPECT_EQ(error_of(parse({"--http-address", "127.0.0.1:99999"})),
            "--http-address '127.0.0.1:99999' has no port between 0 and 65535");
  EXPECT_EQ(error_of(parse({"--http-address", "7680"})), "--http-address '7680' is not HOST:PORT");
  EXPECT_EQ(error_of(parse({"--udp-heartbeat", "on"})), "--udp-heartbeat 'on' is not HOST:PORT; or auto, or off");
  EXPECT_TRUE(parse({"--udp-heartbeat", "0.0.0.0:7600"}).ok());
  EXPECT_EQ(error_of(parse({"--log-level", "loud"})),
            "--log-level must be trace, debug, info, warn, error, critical or off, got 'loud'");
  EXPECT_EQ(error_of(parse({"--state-dir", ""})), "--state-dir must not be empty");
}

TEST(CoordinatorConfigOptions, SyntaxErrorsAndUnknownOptions) {
  TempDir t;
  EXPECT_EQ(error_of(parse({"--bogus"})), "unrecognised option '--bogus'");
  EXPECT_EQ(error_of(parse({"--state", "/x"})), "unrecognised option '--state'") << "no abbreviations";
  EXPECT_EQ(error_of(parse({"stray"})), "too many positional options have been specified on the command line");
  EXPECT_EQ(error_of(parse({"--state-dir"})), "the required argument for option '--state-dir' is missing");
  EXPECT_EQ(error_of(parse({"--config", "/nonexistent/c.conf"})),
            "--config: cannot read config file /nonexistent/c.conf");
  write_text(t / "c.conf", "colour = red\n");
  EXPECT_EQ(error_of(parse({"--config", t / "c.conf"})), "unrecognised option 'colour'");
  write_text(t / "c.conf", "config = /etc/other.conf\n");
  EXPECT_EQ(error_of(parse({"--config", t / "c.conf"})), "unrecognised option 'config'")
      << "--config is for the command line";
}

TEST(CoordinatorConfigOptions, ErrorsEscapeControlCharacters) {
  auto o = parse({"--io-threads", "3\x1b]52;c;eA==\x07"});
  EXPECT_EQ(error_of(o), "--io-threads must be 1..16, got 3\\x1b]52;c;eA==\\x07");
  auto e = parse({"--agent-endpoint", "tcp://h\n:1"});
  EXPECT_EQ(error_of(e).find('\n'), std::string::npos) << error_of(e);
  auto u =
      parse({"--\x9b"
             "31m"});
  EXPECT_EQ(error_of(u).find('\x9b'), std::string::npos) << error_of(u);
}

TEST(CoordinatorConfigOptions, HelpAndVersionNeedNoKeys) {
  for (const char* h : {"--help", "-h"}) {
    auto o = parse_config_options({h});
    ASSERT_TRUE(o.ok()) << error_of(o);
    EXPECT_TRUE(o->help);
    for (const char* s : {"Usage: gantry-coordinator [options]", "--agent-endpoint arg (=tcp://127.0.0.1:7600)",
                          "--accept-agent-key arg"})
      EXPECT_NE(o->text.find(s), std::string::npos) << s;
  }
  auto v = parse_config_options({"--version"});
  ASSERT_TRUE(v.ok()) << error_of(v);
  EXPECT_TRUE(v->version);
}

TEST(CoordinatorConfigOptions, KeysAreReadAndNamed) {
  TempDir t;
  const std::string server = keypair(t, "coordinator"), alice = keypair(t, "alice"), host = keypair(t, "web-1");
  auto o = parse_config_options({"--server-key", server + ".key", "--admin-key", alice + ".pub", "--admin-key",
                                 "bob=" + alice + ".pub", "--accept-agent-key", "web-1=" + host + ".pub"});
  ASSERT_TRUE(o.ok()) << error_of(o);
  EXPECT_TRUE(o->config.curve.enabled());
  ASSERT_EQ(o->config.admin_keys.size(), 2u);
  EXPECT_EQ(o->config.admin_keys[0].first, "alice") << "named after the file";
  EXPECT_EQ(o->config.admin_keys[1].first, "bob");
  ASSERT_EQ(o->config.accept_agent_keys.size(), 1u);
  EXPECT_EQ(o->config.accept_agent_keys[0].first, "web-1");
  EXPECT_EQ(o->config.accept_agent_keys[0].second.size(), 40u);

  EXPECT_NE(error_of(parse_config_options({})).find("no CURVE keys configured; refusing to start."), std::string::npos);
  EXPECT_EQ(error_of(parse_config_options({"--insecure-dev", "--server-key", server + ".key"})),
            "--insecure-dev and --server-key exclude each other");
  EXPECT_EQ(error_of(parse({"--accept-agent-key", host + ".pub"})),
            "--accept-agent-key wants HOST=PUBFILE, got '" + host + ".pub'");
  EXPECT_EQ(error_of(parse({"--accept-agent-key", "../x=" + host + ".pub"})),
            "--accept-agent-key: host '../x' is not a safe name ([A-Za-z0-9._-+@:], 1..128)");
  EXPECT_EQ(error_of(parse({"--admin-key", "a\x1b=" + alice + ".pub"})).find('\x1b'), std::string::npos);
  EXPECT_EQ(error_of(parse({"--server-key", t / "missing.key"})).rfind("--server-key: ", 0), 0u);
  EXPECT_EQ(error_of(parse({"--admin-key", t / "missing.pub"})).rfind("--admin-key: ", 0), 0u);
}

// Issue 23: on the etcd store, agents must leave a leader whose machine went silent soon after
// a standby can take over, so the coordinator's own heartbeat period is at most half the lease
// TTL there (and said so); the options of the etcd store are checked where they enter.
TEST(CoordinatorConfigOptions, TheEtcdStoreBoundsTheCoordinatorHeartbeatAndChecksItsOptions) {
  using gantry::coordinator::parse_config_options;
  auto ha = parse_config_options(
      {"--insecure-dev", "--store", "etcd://127.0.0.1:2379,127.0.0.1:2479", "--name", "c1", "--lease-ttl", "4"});
  ASSERT_TRUE(ha) << ha.error().message;
  EXPECT_EQ(ha->config.coordinator_heartbeat_ms, 2000u);
  EXPECT_EQ(ha->config.lease_ttl_s, 4u);
  ASSERT_EQ(ha->warnings.size(), 1u);
  EXPECT_NE(ha->warnings[0].find("lowered to 2000"), std::string::npos) << ha->warnings[0];

  auto single = parse_config_options({"--insecure-dev"});
  ASSERT_TRUE(single);
  EXPECT_EQ(single->config.coordinator_heartbeat_ms, 10000u);
  EXPECT_FALSE(single->config.etcd());

  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--insecure-dev", "--store", "mysql://x"},
        {"--insecure-dev", "--store", "etcd://"},
        {"--insecure-dev", "--store", "etcd://h:2379", "--name", "bad name"},
        {"--insecure-dev", "--store", "etcd://h:2379", "--lease-ttl", "1"},
        {"--insecure-dev", "--store", "etcd://h:2379", "--etcd-prefix", "nogood"},
        {"--insecure-dev", "--store", "etcd://h:2379", "--etcd-cert", "/c.pem"},
        {"--insecure-dev", "--store", "etcd://h:2379", "--advertise-host", "a b\x1b[31m"}}) {
    auto r = parse_config_options(bad);
    ASSERT_FALSE(r) << bad[2];
    EXPECT_EQ(r.error().code, "usage");
    for (char c : r.error().message) EXPECT_FALSE(c > 0 && c < 0x20 && c != '\n') << r.error().message;
  }
}
