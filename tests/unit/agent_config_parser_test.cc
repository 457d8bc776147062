// The agent's command line and INI file (agent/config/agent_config.cc, through
// Boost.Program_options): the syntax, the documented keys, and messages that name the option
// and its value with control characters escaped.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "agent/config/agent_config.h"
#include "agent_test_util.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

const std::string kSvc = "[service.web]\nroot = /srv/web\nrestart_command = true\n";

// Parses `args` (after argv[0]) with the config file holding `ini`; "{ini}" in args is its path.
Expected<ParsedArgs> parse(TempDir& t, const std::string& ini, std::vector<std::string> args = {"--config", "{ini}"}) {
  std::string path = t / "a.ini";
  write_text(path, ini);
  std::vector<std::string> all = {"gantry-agent"};
  for (auto& a : args) {
    if (auto n = a.find("{ini}"); n != std::string::npos) a.replace(n, 5, path);
    all.push_back(a);
  }
  std::vector<const char*> argv;
  for (const auto& a : all) argv.push_back(a.c_str());
  return parse_args(static_cast<int>(argv.size()), argv.data());
}

std::string error_of(const Expected<ParsedArgs>& p) { return p.ok() ? std::string("(parsed)") : p.error().message; }

}  // namespace

TEST(AgentConfigParser, DefaultsWhenOnlyTheServiceIsGiven) {
  TempDir t;
  auto p = parse(t, "host_id = h\n" + kSvc);
  ASSERT_TRUE(p.ok()) << error_of(p);
  const AgentConfig& c = p->config;
  EXPECT_EQ(c.coordinator, "tcp://127.0.0.1:7600");
  EXPECT_EQ(c.coordinator_pub, "tcp://127.0.0.1:7601");
  EXPECT_EQ(c.state_dir, "/var/lib/gantry-agent");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.heartbeat_interval_ms, 1000);
  EXPECT_FALSE(c.insecure_dev);
  EXPECT_TRUE(c.labels.empty());
  EXPECT_TRUE(c.release_public_keys.empty());
  const auto& s = c.services.at("web");
  EXPECT_EQ(s.driver, "binary");
  EXPECT_EQ(s.restart_timeout_ms, 30000);
  EXPECT_EQ(s.probe_interval_ms, 250);
  EXPECT_EQ(s.retain, 3u);
}

TEST(AgentConfigParser, CommentsBlankLinesAndWhitespace) {
  TempDir t;
  auto p = parse(t,
                 "# a comment\n"
                 "\n"
                 "   host_id   =   h1   # trailing comment\r\n"
                 "\t# indented comment\n"
                 "coordinator=tcp://10.0.0.1:7600\n"
                 "[service.web]   \n"
                 "root = /srv/web\n"
                 "restart_command = systemctl restart web #not part of the command\n");
  ASSERT_TRUE(p.ok()) << error_of(p);
  EXPECT_EQ(p->config.host_id, "h1");
  EXPECT_EQ(p->config.coordinator, "tcp://10.0.0.1:7600");
  EXPECT_EQ(p->config.services.at("web").restart_command, "systemctl restart web");
}

TEST(AgentConfigParser, SectionsPrefixTheirKeys) {
  TempDir t;
  // [service] + web.root is the same key as [service.web] + root.
  auto p =
      parse(t,
            "host_id = h\n[service]\nweb.root = /srv/web\nweb.restart_command = true\n[service.api]\nroot = /srv/api\n"
            "restart_command = true\n");
  ASSERT_TRUE(p.ok()) << error_of(p);
  EXPECT_EQ(p->config.services.at("web").root, "/srv/web");
  EXPECT_EQ(p->config.services.at("api").root, "/srv/api");
  // A global key inside a section is that section's key, not the global one.
  EXPECT_EQ(error_of(parse(t, kSvc + "host_id = h\n")), "unknown key [service.web] host_id");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc + "[other]\nx = 1\n")), "unknown config key 'other.x'");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n[service.]\nroot = /x\n")), "unknown config key 'service.root'");
}

TEST(AgentConfigParser, ValuesAreLiteralOnlyShellSplitKeysUnquote) {
  TempDir t;
  auto p = parse(t,
                 "host_id = h\n[service.web]\nroot = /srv/web\nrestart_command = \"systemctl restart web\"\n"
                 "http_probe_expect = 'ok'\n");
  ASSERT_TRUE(p.ok()) << error_of(p);
  EXPECT_EQ(p->config.services.at("web").restart_command, "\"systemctl restart web\"");
  EXPECT_EQ(p->config.services.at("web").http_probe_expect, "'ok'");
  auto c =
      parse(t,
            "host_id = h\n[service.web]\ndriver = container\nroot = /srv/web\nrun_args = -e \"MSG=a b\" -e 'X=y z'\n"
            "command = a\\ b\n");
  ASSERT_TRUE(c.ok()) << error_of(c);
  EXPECT_EQ(c->config.services.at("web").run_args, (std::vector<std::string>{"-e", "MSG=a b", "-e", "X=y z"}));
  EXPECT_EQ(c->config.services.at("web").command, (std::vector<std::string>{"a b"}));
  EXPECT_FALSE(parse(t, "host_id = h\n[service.web]\ndriver = container\nroot = /srv/web\nrun_args = \"open\n").ok());
}

TEST(AgentConfigParser, BadNumbers) {
  TempDir t;
  EXPECT_EQ(error_of(parse(t, "host_id = h\nheartbeat_interval_ms = abc\n" + kSvc)),
            "the argument ('abc') for option 'heartbeat_interval_ms' is invalid");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--heartbeat-interval-ms", "12x"})),
            "the argument ('12x') for option '--heartbeat_interval_ms' is invalid");
  EXPECT_EQ(error_of(parse(t, "host_id = h\nheartbeat_interval_ms = 99999999999999999999999\n" + kSvc)),
            "the argument ('99999999999999999999999') for option 'heartbeat_interval_ms' is invalid");
  EXPECT_EQ(error_of(parse(t, "host_id = h\nheartbeat_interval_ms = 5\n" + kSvc)),
            "heartbeat_interval_ms must be between 10 and 3600000");
  EXPECT_FALSE(parse(t, "host_id = h\nheartbeat_interval_ms =\n" + kSvc).ok());
  auto plus = parse(t, "host_id = h\nheartbeat_interval_ms = +250\n" + kSvc);
  ASSERT_TRUE(plus.ok()) << error_of(plus);
  EXPECT_EQ(plus->config.heartbeat_interval_ms, 250);
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc + "retain = 0\n")),
            "[service.web] retain must be an integer between 1 and 1000, got '0'");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc + "probe_interval_ms = 1e3\n")),
            "[service.web] probe_interval_ms must be an integer between 10 and 3600000, got '1e3'");
}

TEST(AgentConfigParser, CoordinatorEndpointsAreTcp) {
  TempDir t;
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = pgm://eth0;239.192.1.1:5555\n" + kSvc)),
            "coordinator: endpoint 'pgm://eth0;239.192.1.1:5555' is not tcp:// (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--coordinator-pub", "ipc:///run/x"})),
            "coordinator_pub: endpoint 'ipc:///run/x' is not tcp:// (want tcp://HOST:PORT)");
  // Shapes libzmq would throw on from connect (the agent would abort without a word).
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://\n" + kSvc)),
            "coordinator: endpoint 'tcp://' has no port (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://nonsense\n" + kSvc)),
            "coordinator: endpoint 'tcp://nonsense' has no port (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://:::\n" + kSvc)),
            "coordinator: endpoint 'tcp://:::' has no port between 1 and 65535 (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://h:0\n" + kSvc)),
            "coordinator: endpoint 'tcp://h:0' has no port between 1 and 65535 (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://:7600\n" + kSvc)),
            "coordinator: endpoint 'tcp://:7600' has no host (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://a b:7600\n" + kSvc)),
            "coordinator: endpoint 'tcp://a b:7600' has a malformed host name (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://[::1:7600\n" + kSvc)),
            "coordinator: endpoint 'tcp://[::1:7600' has a malformed IPv6 address (want tcp://HOST:PORT)");
  for (const char* good :
       {"tcp://[::1]:7600", "tcp://[fe80::1%eth0]:7600", "tcp://10.0.0.5:7600", "tcp://coord-1.example.org:65535"}) {
    auto p = parse(t, std::string("host_id = h\ncoordinator = ") + good + "\n" + kSvc);
    ASSERT_TRUE(p.ok()) << good << ": " << error_of(p);
    EXPECT_EQ(p->config.coordinator, good);
  }
}

TEST(AgentConfigParser, UnknownKeysAndOptions) {
  TempDir t;
  EXPECT_EQ(error_of(parse(t, "host_id = h\nbogus = 1\n" + kSvc)), "unknown config key 'bogus'");
  EXPECT_EQ(error_of(parse(t, "host_id = h\nhost-id = h\n" + kSvc)), "unknown config key 'host-id'")
      << "the file spells names with '_' only";
  EXPECT_EQ(error_of(parse(t, "host_id = h\nconfig = /etc/x\n" + kSvc)), "unknown config key 'config'")
      << "command-line-only options are not settings";
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc + "colour = red\n")), "unknown key [service.web] colour");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--bogus-flag"})),
            "unrecognised option '--bogus_flag'");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "-x"})), "unrecognised option '-x'");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "stray"})),
            "too many positional options have been specified on the command line");
  EXPECT_EQ(error_of(parse(t, "host_id = h\njust some words\n" + kSvc)),
            "the options configuration file contains an invalid line 'just some words'");
}

TEST(AgentConfigParser, CommandLineSpellingsAndValues) {
  TempDir t;
  const std::string ini = "host_id = from-file\n" + kSvc;
  for (std::vector<std::string> args : {std::vector<std::string>{"--config", "{ini}", "--host-id", "cli"},
                                        {"--config={ini}", "--host_id=cli"},
                                        {"-c", "{ini}", "--host-id=cli"},
                                        {"-c{ini}", "--host_id", "cli"}}) {
    auto p = parse(t, ini, args);
    ASSERT_TRUE(p.ok()) << error_of(p);
    EXPECT_EQ(p->config.host_id, "cli") << "the command line wins";
  }
  EXPECT_EQ(error_of(parse(t, ini, {"--config"})), "the required argument for option '--config' is missing");
  EXPECT_EQ(error_of(parse(t, ini, {"--config", "{ini}", "--host-id", "a", "--host-id", "b"})),
            "option '--host_id' cannot be specified more than once");
  EXPECT_EQ(error_of(parse(t, "host_id = a\nhost_id = b\n" + kSvc)),
            "option 'host_id' cannot be specified more than once");
  // A value given on the command line is final: the file's (even repeated) is not read.
  EXPECT_TRUE(parse(t, "host_id = a\nhost_id = b\n" + kSvc, {"--config", "{ini}", "--host-id", "c"}).ok());
  auto empty = parse(t, "host_id = h\nlog_level = debug\n" + kSvc, {"--config", "{ini}", "--log-level="});
  EXPECT_EQ(error_of(empty), "the argument for option '--log_level' should follow immediately after the equal sign");
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--log-level", ""})),
            "unknown log level ''");
}

TEST(AgentConfigParser, RepeatableOptionsComposeCommandLineFirst) {
  TempDir t;
  auto p = parse(t,
                 "host_id = h\nlabel = zone=eu\nrelease_public_key = /k/file.pub\nrelease_public_key = /k/file2.pub\n"
                 "agent_key = /k/a.key\ncoordinator_key = /k/c.pub\n" +
                     kSvc,
                 {"--config", "{ini}", "--label", "rack=r1", "--release-public-key", "/k/cli.pub", "--label=zone=us"});
  ASSERT_TRUE(p.ok()) << error_of(p);
  EXPECT_EQ(p->config.release_public_keys, (std::vector<std::string>{"/k/cli.pub", "/k/file.pub", "/k/file2.pub"}));
  EXPECT_EQ(p->config.labels.at("rack"), "r1");
  EXPECT_EQ(p->config.labels.at("zone"), "eu") << "labels apply in order: command line, then file";
  EXPECT_EQ(error_of(parse(t, "host_id = h\nlabel = novalue\n" + kSvc)), "label 'novalue' must be key=value");
}

TEST(AgentConfigParser, Switches) {
  TempDir t;
  for (const char* v : {"true", "TRUE", "yes", "on", "1", ""}) {
    auto p = parse(t, "host_id = h\ninsecure_dev = " + std::string(v) + "\n" + kSvc);
    ASSERT_TRUE(p.ok()) << v << ": " << error_of(p);
    EXPECT_TRUE(p->config.insecure_dev) << v;
  }
  for (const char* v : {"false", "No", "off", "0"}) {
    auto p = parse(t, "host_id = h\ninsecure_dev = " + std::string(v) + "\n" + kSvc);
    ASSERT_TRUE(p.ok()) << v << ": " << error_of(p);
    EXPECT_FALSE(p->config.insecure_dev) << v;
  }
  EXPECT_EQ(
      error_of(parse(t, "host_id = h\ninsecure_dev = maybe\n" + kSvc)),
      "the argument ('maybe') for option 'insecure_dev' is invalid. Valid choices are 'on|off', 'yes|no', '1|0' and "
      "'true|false'");
  auto cli = parse(t, "host_id = h\ninsecure_dev = false\n" + kSvc, {"--config", "{ini}", "--insecure-dev"});
  ASSERT_TRUE(cli.ok()) << error_of(cli);
  EXPECT_TRUE(cli->config.insecure_dev) << "the command line wins";
  EXPECT_EQ(error_of(parse(t, kSvc, {"--config", "{ini}", "--insecure-dev=yes"})),
            "option '--insecure_dev' does not take any arguments");
}

TEST(AgentConfigParser, HelpAndVersion) {
  TempDir t;
  for (const char* h : {"--help", "-h"}) {
    auto p = parse(t, "", {h});
    ASSERT_TRUE(p.ok()) << error_of(p);
    EXPECT_TRUE(p->help);
    EXPECT_EQ(p->text.rfind("Usage: gantry-agent keygen --out PREFIX", 0), 0u) << p->text;
    for (const char* line :
         {"  -c [ --config ] arg                   INI config file (services are \n",
          "  --coordinator arg (=tcp://127.0.0.1:7600)\n",
          "  --heartbeat-interval-ms arg (=1000)   heartbeat interval until the \n", "  runtime_timeout_ms = 600000\n"})
      EXPECT_NE(p->text.find(line), std::string::npos) << line;
  }
  auto v = parse(t, "", {"--version"});
  ASSERT_TRUE(v.ok()) << error_of(v);
  EXPECT_TRUE(v->version);
  EXPECT_EQ(error_of(parse(t, "", {"--help", "--nope"})), "unrecognised option '--nope'") << "bad options first";
  EXPECT_EQ(error_of(parse(t, "", {"--help=1"})), "option '--help' does not take any arguments");
}

TEST(AgentConfigParser, MissingOrUnreadableFile) {
  TempDir t;
  const char* argv[] = {"gantry-agent", "--config", "/nonexistent/agent.ini"};
  auto p = parse_args(3, argv);
  EXPECT_EQ(error_of(p), "cannot read config file /nonexistent/agent.ini");
  const char* none[] = {"gantry-agent", "--host-id", "h"};
  EXPECT_EQ(error_of(parse_args(3, none)), "--config FILE is required");
}

TEST(AgentConfigParser, UdpHeartbeatsIsOnByDefaultAndABoolean) {
  TempDir t;
  auto on = parse(t, "host_id = h\n" + kSvc);
  ASSERT_TRUE(on.ok()) << on.error().message;
  EXPECT_TRUE(on->config.udp_heartbeats);
  auto off = parse(t, "host_id = h\nudp_heartbeats = false\n" + kSvc);
  ASSERT_TRUE(off.ok()) << off.error().message;
  EXPECT_FALSE(off->config.udp_heartbeats);
  auto cli = parse(t, "host_id = h\nudp_heartbeats = off\n" + kSvc, {"--config", "{ini}", "--udp-heartbeats", "yes"});
  ASSERT_TRUE(cli.ok()) << cli.error().message;
  EXPECT_TRUE(cli->config.udp_heartbeats) << "the command line wins";
  EXPECT_EQ(error_of(parse(t, "host_id = h\nudp_heartbeats = maybe\n" + kSvc)),
            "udp_heartbeats must be true or false, not 'maybe'");
}

TEST(AgentConfigParser, EveryDocumentedKeyParses) {
  TempDir t;
  auto p =
      parse(t,
            "host_id = web-1\ncoordinator = tcp://10.0.0.5:7600\ncoordinator_pub = tcp://10.0.0.5:7601\n"
            "state_dir = /var/lib/x\nlabel = role=web\nlabel = zone=eu-1a\ninsecure_dev = false\n"
            "agent_key = /k/agent.key\ncoordinator_key = /k/coord.pub\nrelease_public_key = /k/release.pub\n"
            "log_level = debug\nheartbeat_interval_ms = 2000\nudp_heartbeats = false\n"
            "[service.web]\ndriver = binary\nroot = /srv/web\nrestart_command = systemctl restart web\n"
            "restart_timeout_ms = 40000\nhttp_probe = http://127.0.0.1:8080/health\nhttp_probe_expect = ok\n"
            "tcp_probe = 127.0.0.1:8080\nprobe_interval_ms = 300\nmin_healthy_ms = 5000\nhealthy_deadline_ms = 60000\n"
            "retain = 4\n"
            "[service.box]\ndriver = container\nroot = /srv/box\nruntime = docker\nruntime_args = --log-level warn\n"
            "container_name = box-1\nrun_args = --network host\nrun_args = -e A=b\ncommand = --port 8080\n"
            "start_order = start-first\nstop_timeout_ms = 5000\nruntime_timeout_ms = 120000\n");
  ASSERT_TRUE(p.ok()) << error_of(p);
  const AgentConfig& c = p->config;
  EXPECT_EQ(c.host_id, "web-1");
  EXPECT_EQ(c.coordinator_pub, "tcp://10.0.0.5:7601");
  EXPECT_EQ(c.state_dir, "/var/lib/x");
  EXPECT_EQ(c.labels.size(), 2u);
  EXPECT_EQ(c.agent_key, "/k/agent.key");
  EXPECT_EQ(c.coordinator_key, "/k/coord.pub");
  EXPECT_EQ(c.release_public_keys, (std::vector<std::string>{"/k/release.pub"}));
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.heartbeat_interval_ms, 2000);
  EXPECT_FALSE(c.udp_heartbeats);
  const auto& w = c.services.at("web");
  EXPECT_EQ(w.restart_command, "systemctl restart web");
  EXPECT_EQ(w.restart_timeout_ms, 40000);
  EXPECT_EQ(w.http_probes, (std::vector<std::string>{"http://127.0.0.1:8080/health"}));
  EXPECT_EQ(w.http_probe_expect, "ok");
  EXPECT_EQ(w.tcp_probes, (std::vector<std::string>{"127.0.0.1:8080"}));
  EXPECT_EQ(w.probe_interval_ms, 300);
  EXPECT_EQ(w.min_healthy_ms, 5000);
  EXPECT_EQ(w.healthy_deadline_ms, 60000);
  EXPECT_EQ(w.retain, 4u);
  const auto& b = c.services.at("box");
  EXPECT_EQ(b.driver, "container");
  EXPECT_EQ(b.runtime, "docker");
  EXPECT_EQ(b.runtime_args, (std::vector<std::string>{"--log-level", "warn"}));
  EXPECT_EQ(b.container_name, "box-1");
  EXPECT_EQ(b.run_args, (std::vector<std::string>{"--network", "host", "-e", "A=b"}));
  EXPECT_EQ(b.command, (std::vector<std::string>{"--port", "8080"}));
  EXPECT_EQ(b.start_order, "start-first");
  EXPECT_EQ(b.stop_timeout_ms, 5000);
  EXPECT_EQ(b.runtime_timeout_ms, 120000);
}

// The example shipped in packaging/ is a valid config (its key files need not exist to parse).
TEST(AgentConfigParser, ThePackagedExampleParses) {
  // __FILE__ is absolute, or relative to the build directory (where the compiler ran), which is
  // the parent of this binary's directory (build/tests/gantry_unit_tests).
  std::string here = __FILE__;
  if (here.front() != '/')
    here = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path().string() + "/" + here;
  const std::string example = here.substr(0, here.rfind("/tests/unit/")) + "/packaging/examples/agent.conf";
  const char* argv[] = {"gantry-agent", "--config", example.c_str()};
  auto p = parse_args(3, argv);
  ASSERT_TRUE(p.ok()) << example << ": " << error_of(p);
  EXPECT_EQ(p->config.coordinator, "tcp://gantry.example.internal:7600");
  EXPECT_EQ(p->config.labels.at("zone"), "eu-1a");
  EXPECT_EQ(p->config.services.at("web").root, "/srv/web");
  EXPECT_EQ(p->config.services.at("web").healthy_deadline_ms, 60000);
}

TEST(AgentConfigParser, ErrorsEscapeControlCharactersOfTheValue) {
  TempDir t;
  // From the command line: an escape sequence (OSC 52 clipboard write) and a newline.
  auto cli =
      parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--heartbeat-interval-ms", "1\x1b]52;c;eA==\x07\nx"});
  ASSERT_FALSE(cli.ok());
  EXPECT_EQ(cli.error().message,
            "the argument ('1\\x1b]52;c;eA==\\x07\\x0ax') for option '--heartbeat_interval_ms' is invalid");
  auto host = parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--host-id", "h\x1b[2J"});
  ASSERT_FALSE(host.ok());
  EXPECT_EQ(host.error().message, "host id 'h\\x1b[2J' is not a safe name");
  // From the file: invalid UTF-8 and a carriage return inside a value.
  auto file = parse(t, "host_id = h\n" + kSvc + "driver = bin\xff\rary\n");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().message, "[service.web] driver: unsupported driver 'bin\\xff\\x0dary' (binary or container)");
  auto unknown = parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--\x1b[31mred"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message.find('\x1b'), std::string::npos) << unknown.error().message;
}

TEST(AgentConfigParser, AbbreviationsAreNotGuessed) {
  TempDir t;
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--host", "x"})),
            "unrecognised option '--host'");
}

TEST(AgentStateArgs, StateDirHelpAndErrors) {
  auto state = [](std::vector<const char*> args) {
    args.insert(args.begin(), "state");
    return parse_state_args(static_cast<int>(args.size()), args.data());
  };
  for (auto args : {std::vector<const char*>{"--state-dir", "/var/lib/a"}, {"--state_dir=/var/lib/a"}}) {
    auto p = state(args);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_EQ(p->state_dir, "/var/lib/a");
  }
  auto h = state({"--help"});
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->help);
  EXPECT_NE(h->text.find("--state-dir"), std::string::npos) << h->text;
  EXPECT_FALSE(state({}).ok()) << "--state-dir is required";
  EXPECT_FALSE(state({"--state-dir", "/a", "stray"}).ok());
  EXPECT_FALSE(state({"--state-dir", ""}).ok());
}

// A leader and its standbys: comma-separated lists, one broadcast endpoint per agent endpoint.
TEST(AgentConfigParser, CoordinatorListsArePairedAndChecked) {
  TempDir t;
  auto p = parse(t,
                 "host_id = h\ncoordinator = tcp://a:7600, tcp://b:7600,tcp://[fd00::3]:7600\n"
                 "coordinator_pub = tcp://a:7601,tcp://b:7601 ,tcp://[fd00::3]:7601\n" +
                     kSvc);
  ASSERT_TRUE(p.ok()) << error_of(p);
  EXPECT_EQ(p->config.coordinators, (std::vector<std::string>{"tcp://a:7600", "tcp://b:7600", "tcp://[fd00::3]:7600"}));
  EXPECT_EQ(p->config.coordinator_pubs,
            (std::vector<std::string>{"tcp://a:7601", "tcp://b:7601", "tcp://[fd00::3]:7601"}));
  auto one = parse(t, "host_id = h\n" + kSvc);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->config.coordinators, std::vector<std::string>{"tcp://127.0.0.1:7600"});
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://a:7600,tcp://b:7600\n" + kSvc)),
            "coordinator lists 2 endpoint(s) and coordinator_pub 1; give one broadcast endpoint per coordinator, in "
            "the same order");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://a:7600,,tcp://b:7600\n" + kSvc)),
            "coordinator: endpoint '' is not tcp:// (want tcp://HOST:PORT)");
  EXPECT_EQ(error_of(parse(t, "host_id = h\ncoordinator = tcp://a:7600,tcp://b\n" + kSvc)),
            "coordinator: endpoint 'tcp://b' has no port (want tcp://HOST:PORT)");
  std::string many = "tcp://a:1";
  for (int i = 2; i <= 17; ++i) many += ",tcp://a:" + std::to_string(i);
  EXPECT_EQ(error_of(parse(t, "host_id = h\n" + kSvc, {"--config", "{ini}", "--coordinator", many})),
            "coordinator: more than 16 endpoints");
}

// GANTRY_AGENT_COORDINATOR / GANTRY_AGENT_COORDINATOR_PUB: over the config file, under the command line.
TEST(AgentConfigParser, CoordinatorEnvironmentSitsBetweenFlagsAndFile) {
  struct Env {
    Env() {
      ::setenv("GANTRY_AGENT_COORDINATOR", "tcp://env-a:7600,tcp://env-b:7600", 1);
      ::setenv("GANTRY_AGENT_COORDINATOR_PUB", "tcp://env-a:7601,tcp://env-b:7601", 1);
    }
    ~Env() {
      ::unsetenv("GANTRY_AGENT_COORDINATOR");
      ::unsetenv("GANTRY_AGENT_COORDINATOR_PUB");
    }
  } env;
  TempDir t;
  const std::string ini = "host_id = h\ncoordinator = tcp://file:7600\ncoordinator_pub = tcp://file:7601\n" + kSvc;
  auto p = parse(t, ini);
  ASSERT_TRUE(p.ok()) << error_of(p);
  EXPECT_EQ(p->config.coordinators, (std::vector<std::string>{"tcp://env-a:7600", "tcp://env-b:7600"}));
  EXPECT_EQ(p->config.coordinator_pubs, (std::vector<std::string>{"tcp://env-a:7601", "tcp://env-b:7601"}));
  auto flags =
      parse(t, ini, {"--config", "{ini}", "--coordinator", "tcp://flag:7600", "--coordinator-pub", "tcp://flag:7601"});
  ASSERT_TRUE(flags.ok()) << error_of(flags);
  EXPECT_EQ(flags->config.coordinators, std::vector<std::string>{"tcp://flag:7600"});
  EXPECT_EQ(flags->config.coordinator_pubs, std::vector<std::string>{"tcp://flag:7601"});
}
