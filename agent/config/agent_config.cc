#include "agent/config/agent_config.h"

#include <unistd.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "agent/probe/probe.h"
#include "common/transport/zmq_transport.h"
#include "common/util/endpoint.h"
#include "common/util/names.h"
#include "common/util/shell_words.h"
#include "common/util/text.h"

namespace gantry::agent {

namespace po = boost::program_options;

namespace {

Error cfg_error(const std::string& msg) { return make_error("config", msg); }

// What {slot} and {port} stand for while a value naming them is checked.
const Slot kSampleSlot{"a", 1};

Expected<Millis> parse_ms(const std::string& key, const std::string& v, Millis min, Millis max) {
  try {
    size_t used = 0;
    long long n = std::stoll(v, &used);
    if (used != v.size() || n < min || n > max) throw std::out_of_range(v);
    return static_cast<Millis>(n);
  } catch (const std::exception&) {
    return cfg_error(key + " must be an integer between " + std::to_string(min) + " and " + std::to_string(max) +
                     ", got '" + v + "'");
  }
}

// What podman and docker accept as a container name.
bool valid_container_name(const std::string& v) {
  if (v.empty() || v.size() > 128 || !std::isalnum(static_cast<unsigned char>(v[0]))) return false;
  for (char c : v)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

Status apply_service_key(ServiceConfig& s, const std::string& key, const std::string& v) {
  std::string where = "[service." + s.name + "] " + key;
  if (key == "driver") {
    if (v != "binary" && v != "container")
      return cfg_error(where + ": unsupported driver '" + v + "' (binary or container)");
    s.driver = v;
  } else if (key == "root") {
    if (v.empty() || v[0] != '/') return cfg_error(where + " must be an absolute path");
    s.root = v;
    while (s.root.size() > 1 && s.root.back() == '/') s.root.pop_back();
  } else if (key == "restart_command") {
    s.restart_command = v;
  } else if (key == "restart_timeout_ms") {
    auto n = parse_ms(where, v, 1, 24LL * 3600 * 1000);
    if (!n) return n.error();
    s.restart_timeout_ms = *n;
  } else if (key == "http_probe") {
    // {port} and {slot} (start-first) are checked as a slot's values would be.
    if (Status st = HttpProbe::validate(with_slot(v, kSampleSlot)); !st.ok())
      return cfg_error(where + ": " + st.error().message);
    s.http_probes.push_back(v);
  } else if (key == "http_probe_expect") {
    s.http_probe_expect = v;
  } else if (key == "tcp_probe") {
    if (Status st = TcpProbe::validate(with_slot(v, kSampleSlot)); !st.ok())
      return cfg_error(where + ": " + st.error().message);
    s.tcp_probes.push_back(v);
  } else if (key == "probe_interval_ms") {
    auto n = parse_ms(where, v, 10, 3600 * 1000);
    if (!n) return n.error();
    s.probe_interval_ms = *n;
  } else if (key == "min_healthy_ms") {
    auto n = parse_ms(where, v, 0, 24LL * 3600 * 1000);
    if (!n) return n.error();
    s.min_healthy_ms = *n;
  } else if (key == "healthy_deadline_ms") {
    auto n = parse_ms(where, v, 1, 24LL * 3600 * 1000);
    if (!n) return n.error();
    s.healthy_deadline_ms = *n;
  } else if (key == "runtime") {
    if (v.empty() || v.find_first_of(" \t") != std::string::npos)
      return cfg_error(where + " must be one program (podman, docker or a path)");
    s.runtime = v;
  } else if (key == "runtime_args" || key == "run_args" || key == "command") {
    // Repeatable; each value is split like a shell would (quotes, backslashes; no expansion).
    auto words = split_shell_words(v);
    if (!words) return cfg_error(where + ": " + words.error().message);
    auto& dst = key == "runtime_args" ? s.runtime_args : key == "run_args" ? s.run_args : s.command;
    dst.insert(dst.end(), words->begin(), words->end());
  } else if (key == "container_name") {
    if (!valid_container_name(v))
      return cfg_error(where + ": '" + v + "' is not a valid container name ([A-Za-z0-9][A-Za-z0-9_.-]*)");
    s.container_name = v;
  } else if (key == "start_order") {
    if (v != "stop-first" && v != "start-first")
      return cfg_error(where + " must be stop-first or start-first, got '" + v + "'");
    s.start_order = v;
  } else if (key == "stop_timeout_ms") {
    auto n = parse_ms(where, v, 0, 3600 * 1000);
    if (!n) return n.error();
    s.stop_timeout_ms = *n;
  } else if (key == "runtime_timeout_ms") {
    auto n = parse_ms(where, v, 1000, 24LL * 3600 * 1000);
    if (!n) return n.error();
    s.runtime_timeout_ms = *n;
  } else if (key == "slots") {
    auto slots = parse_slots(v);
    if (!slots) return cfg_error(where + " " + slots.error().message);
    s.slots = *slots;
  } else if (key == "start_command" || key == "stop_command") {
    if (v.empty()) return cfg_error(where + " must not be empty");
    (key == "start_command" ? s.start_command : s.stop_command) = v;
  } else if (key == "start_timeout_ms") {
    auto n = parse_ms(where, v, 1, 24LL * 3600 * 1000);
    if (!n) return n.error();
    s.start_timeout_ms = *n;
  } else if (key == "haproxy_server" && names_slot(v)) {
    // BACKEND/SERVER naming each slot's server ({slot}): checked as a slot's name would be.
    traffic::LifecycleSettings sample;
    if (Status st = traffic::apply_setting(sample, key, with_slot(v, kSampleSlot)); !st.ok())
      return cfg_error(where + " " + st.error().message);
    s.traffic.haproxy.backend = v.substr(0, v.find('/'));
    s.traffic.haproxy.server = v.substr(v.find('/') + 1);
  } else if (key == "retain") {
    auto n = parse_ms(where, v, 1, 1000);
    if (!n) return n.error();
    s.retain = static_cast<uint32_t>(*n);
  } else if (traffic::is_setting_key(key)) {
    if (Status st = traffic::apply_setting(s.traffic, key, v); !st.ok())
      return cfg_error(where + " " + st.error().message);
  } else {
    return cfg_error("unknown key " + where);
  }
  return Status::Ok();
}

// Cross-key checks of a binary service (after the whole section was read): start-first needs
// its slots and commands, and its probes and HAProxy server must tell the slots apart.
Status check_binary_service(const ServiceConfig& s) {
  const std::string where = "[service." + s.name + "]";
  std::vector<std::string> probes = s.http_probes;
  probes.insert(probes.end(), s.tcp_probes.begin(), s.tcp_probes.end());
  const bool slot_probe = std::any_of(probes.begin(), probes.end(), [](const auto& p) { return names_slot(p); });
  const std::string server = s.traffic.haproxy.backend + "/" + s.traffic.haproxy.server;
  if (s.start_order != "start-first") {
    if (!s.slots.empty() || !s.start_command.empty() || !s.stop_command.empty())
      return cfg_error(where + " slots, start_command and stop_command need start_order = start-first");
    if (slot_probe || names_slot(server))
      return cfg_error(where + " {slot} and {port} name a slot: they need start_order = start-first and slots");
    if (s.restart_command.empty()) return cfg_error(where + " needs restart_command");
    return Status::Ok();
  }
  if (s.slots.empty())
    return cfg_error(where +
                     " start_order = start-first needs slots = NAME:PORT NAME:PORT (the new release starts in "
                     "the slot the live one does not use)");
  if (!s.restart_command.empty())
    return cfg_error(where +
                     " restart_command restarts the one instance (stop-first); with start_order = start-first "
                     "set start_command and stop_command, which act on one slot ($GANTRY_SLOT)");
  if (s.start_command.empty() || s.stop_command.empty())
    return cfg_error(where + " start_order = start-first needs start_command and stop_command (run per slot)");
  if (!slot_probe)
    return cfg_error(where +
                     " start_order = start-first verifies the new instance on its slot: name the slot's port "
                     "in a probe as {port} (http_probe = http://127.0.0.1:{port}/health)");
  if (!s.traffic.haproxy.socket.empty() && !names_slot(server))
    return cfg_error(where + " haproxy_server = " + server +
                     " is one server for two instances: name each slot's server with {slot} (e.g. " +
                     s.traffic.haproxy.backend + "/" + s.traffic.haproxy.server + "-{slot})");
  return Status::Ok();
}

// Cross-key checks of a container service (after the whole section was read).
Status check_container_service(const ServiceConfig& s) {
  std::string where = "[service." + s.name + "]";
  if (!valid_container_name(s.container_name))
    return cfg_error(where + " container_name '" + s.container_name +
                     "' is not a valid container name; set container_name");
  if (s.start_order == "start-first") {
    // Two instances run at once: a fixed published host port would make the second one fail.
    for (size_t i = 0; i < s.run_args.size(); ++i) {
      const std::string& a = s.run_args[i];
      if (a == "-p" || a == "--publish" || a.rfind("--publish=", 0) == 0 || (a.rfind("-p", 0) == 0 && a.size() > 2))
        return cfg_error(where + " start_order = start-first cannot publish a fixed host port (" + a +
                         "): the old and the new container run side by side; use stop-first");
    }
  }
  return Status::Ok();
}

// The command line spells a long name with '-' or '_' (--host-id, --host_id); the options are
// registered with the config file's '_' spelling, so '-' in a long name becomes '_' here.
std::vector<std::string> underscore_long_names(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      for (size_t j = 2; j < a.size() && a[j] != '='; ++j)
        if (a[j] == '-') a[j] = '_';
    }
    args.push_back(std::move(a));
  }
  return args;
}

// At most this many coordinators in a list (three is the usual set-up).
constexpr size_t kMaxCoordinators = 16;

constexpr const char* kUsage =
    "Usage: gantry-agent keygen --out PREFIX   (writes PREFIX.key and PREFIX.pub)\n"
    "       gantry-agent state --state-dir DIR (prints the journal's current state as JSON)\n"
    "       gantry-agent --config FILE [--host-id ID] [--coordinator tcp://HOST:7600[,tcp://HOST2:7600...]]\n"
    "                    [--coordinator-pub tcp://HOST:7601[,...]] [--state-dir DIR] [--label k=v]...\n"
    "                    [--agent-key FILE --coordinator-key FILE --release-public-key FILE...]\n"
    "                    [--insecure-dev] [--log-level info]\n"
    "\n";

constexpr const char* kServiceHelp =
    "\n"
    "Service sections in the config file:\n"
    "  [service.NAME]\n"
    "  driver = binary\n"
    "  root = /srv/NAME                  (install root: releases/, current -> releases/V)\n"
    "  restart_command = systemctl restart NAME\n"
    "  restart_timeout_ms = 30000\n"
    "  http_probe = http://127.0.0.1:8080/health   (repeatable; healthy iff 200)\n"
    "  http_probe_expect = ok             (optional body substring)\n"
    "  tcp_probe = 127.0.0.1:8080         (repeatable)\n"
    "  probe_interval_ms = 250\n"
    "  min_healthy_ms = 2000\n"
    "  healthy_deadline_ms = 30000\n"
    "  retain = 3\n"
    "  # start-first (two instances side by side; README \"Rolling without downtime\"):\n"
    "  start_order = start-first         (instead of restart_command)\n"
    "  slots = a:8081 b:8082             (two slots, NAME:PORT; the new release starts in the free one)\n"
    "  start_command = ...               (starts slot $GANTRY_SLOT on $GANTRY_SLOT_PORT from $GANTRY_RELEASE_DIR)\n"
    "  stop_command = ...                (stops slot $GANTRY_SLOT; succeeds when nothing runs there)\n"
    "  start_timeout_ms = 30000   stop_timeout_ms = 10000\n"
    "  http_probe = http://127.0.0.1:{port}/health   haproxy_server = BACKEND/SERVER-{slot}\n"
    "  # traffic steps, all optional (README \"Rolling without downtime\"):\n"
    "  haproxy_socket = /run/haproxy/admin.sock   haproxy_server = BACKEND/SERVER\n"
    "  haproxy_drain_timeout_ms = 30000   haproxy_up_timeout_ms = 30000\n"
    "  block_traffic_command, wait_inflight_command, allow_traffic_command, post_allow_command\n"
    "  (each with *_timeout_ms = 30000), drain_delay_ms = 0, post_allow_healthy_ms = 0\n"
    "  # driver = container (instead of restart_command; see docs/CONTAINERS.md):\n"
    "  runtime = podman                  (or docker; same grammar)\n"
    "  runtime_args = --runtime runc     (global runtime flags; repeatable, shell-split)\n"
    "  container_name = NAME             (default: the service name)\n"
    "  run_args = --network host -e A=b  (run flags; repeatable, shell-split)\n"
    "  command = --port 8080             (arguments after the image; default: its CMD)\n"
    "  start_order = stop-first          (or start-first: new container up before the old stops)\n"
    "  stop_timeout_ms = 10000\n"
    "  runtime_timeout_ms = 600000\n";

// Help text with the command line's '-' spelling of the option names (--host-id, not --host_id).
std::string dash_names(std::string text) {
  for (size_t i = text.find("--"); i != std::string::npos; i = text.find("--", i + 2))
    for (size_t j = i + 2; j < text.size() && (std::isalnum(static_cast<unsigned char>(text[j])) || text[j] == '_');
         ++j)
      if (text[j] == '_') text[j] = '-';
  return text;
}

// Everything parse_args does; its messages may hold raw bytes of argv or the file, which
// parse_args escapes once on the way out.
Expected<ParsedArgs> parse_args_raw(int argc, const char* const* argv) {
  ParsedArgs out;
  AgentConfig& c = out.config;
  std::string config_file, udp_heartbeats = "true";
  std::vector<std::string> labels;
  int64_t hb = c.heartbeat_interval_ms;

  po::options_description cli("gantry-agent options");
  cli.add_options()("help,h", "show this help")("version", "print the version")(
      "config,c", po::value<std::string>(&config_file), "INI config file (services are [service.NAME] sections)");
  po::options_description settings("settings (command line or config file; the command line wins)");
  settings.add_options()("host_id", po::value<std::string>(&c.host_id), "host id (default: the hostname)")(
      "coordinator", po::value<std::string>(&c.coordinator)->default_value(c.coordinator),
      "coordinator agent endpoint(s): tcp://HOST:PORT, or a comma-separated list of a leader and its standbys "
      "(env GANTRY_AGENT_COORDINATOR)")(
      "coordinator_pub", po::value<std::string>(&c.coordinator_pub)->default_value(c.coordinator_pub),
      "coordinator broadcast endpoint(s), one per --coordinator endpoint, same order (env "
      "GANTRY_AGENT_COORDINATOR_PUB)")("state_dir", po::value<std::string>(&c.state_dir)->default_value(c.state_dir),
                                       "directory for the agent's journal")(
      "label", po::value<std::vector<std::string>>(&labels)->composing(), "label k=v (repeatable)")(
      "insecure_dev", po::bool_switch(&c.insecure_dev),
      "allow plaintext ZeroMQ and unsigned releases (development only)")(
      "agent_key", po::value<std::string>(&c.agent_key), "this agent's CURVE secret key file (gantry-agent keygen)")(
      "coordinator_key", po::value<std::string>(&c.coordinator_key),
      "the coordinator's CURVE public key file (pinned)")(
      "release_public_key", po::value<std::vector<std::string>>(&c.release_public_keys)->composing(),
      "ed25519 release public key file (repeatable); only releases signed by one of them install")(
      "log_level", po::value<std::string>(&c.log_level)->default_value(c.log_level), "trace|debug|info|warn|error")(
      "heartbeat_interval_ms", po::value<int64_t>(&hb)->default_value(hb),
      "heartbeat interval until the coordinator's welcome says otherwise")(
      "udp_heartbeats", po::value<std::string>(&udp_heartbeats)->default_value(udp_heartbeats),
      "heartbeat by UDP datagrams when the coordinator offers it (false: always over the connection)");
  po::options_description all;
  all.add(cli).add(settings);

  po::variables_map vm;
  std::vector<po::option> service_opts;
  try {
    // No abbreviations: --host is not --host_id.
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    const po::positional_options_description none;  // a stray word is an error, not ignored
    po::store(
        po::command_line_parser(underscore_long_names(argc, argv)).options(all).positional(none).style(style).run(),
        vm);
    // The environment comes after the command line and before the config file (the first
    // value stored wins); only these two variables are read.
    po::store(po::parse_environment(settings,
                                    [](const std::string& var) -> std::string {
                                      if (var == "GANTRY_AGENT_COORDINATOR") return "coordinator";
                                      if (var == "GANTRY_AGENT_COORDINATOR_PUB") return "coordinator_pub";
                                      return "";
                                    }),
              vm);
    if (vm.count("help")) {
      out.help = true;
      std::ostringstream os;
      os << kUsage << all << kServiceHelp;
      out.text = dash_names(os.str());
      return out;
    }
    if (vm.count("version")) {
      out.version = true;
      return out;
    }
    if (vm.count("config")) {
      const std::string& path = vm["config"].as<std::string>();
      std::ifstream f(path);
      if (!f) return cfg_error("cannot read config file " + path);
      // [service.NAME] keys are not in the table: they come back unregistered as service.NAME.key.
      auto parsed = po::parse_config_file(f, settings, /*allow_unregistered=*/true);
      for (auto& o : parsed.options)
        if (o.unregistered) service_opts.push_back(o);
      po::store(parsed, vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return cfg_error(e.what());
  }

  for (const auto& o : service_opts) {
    const std::string& k = o.string_key;
    const std::string prefix = "service.";
    auto dot = k.rfind('.');
    if (k.rfind(prefix, 0) != 0 || dot <= prefix.size() - 1 || dot == k.size() - 1)
      return cfg_error("unknown config key '" + k + "'");
    std::string name = k.substr(prefix.size(), dot - prefix.size());
    std::string key = k.substr(dot + 1);
    if (!is_safe_name(name)) return cfg_error("service name '" + name + "' is not a safe name");
    auto& s = c.services[name];
    s.name = name;
    for (const auto& v : o.value)
      if (Status st = apply_service_key(s, key, v); !st.ok()) return st.error();
  }

  if (!vm.count("config")) return cfg_error("--config FILE is required");
  if (c.host_id.empty()) {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) == 0) c.host_id = buf;
  }
  if (!is_safe_name(c.host_id)) return cfg_error("host id '" + c.host_id + "' is not a safe name");
  for (const auto& l : labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos) return cfg_error("label '" + l + "' must be key=value");
    std::string k = l.substr(0, eq), v = l.substr(eq + 1);
    if (!is_label_token(k, false) || !is_label_token(v, true))
      return cfg_error("label '" + l + "' has invalid characters");
    c.labels[k] = v;
  }
  if (udp_heartbeats == "true" || udp_heartbeats == "yes" || udp_heartbeats == "on" || udp_heartbeats == "1")
    c.udp_heartbeats = true;
  else if (udp_heartbeats == "false" || udp_heartbeats == "no" || udp_heartbeats == "off" || udp_heartbeats == "0")
    c.udp_heartbeats = false;
  else
    return cfg_error("udp_heartbeats must be true or false, not '" + udp_heartbeats + "'");
  if (hb < 10 || hb > 3600 * 1000) return cfg_error("heartbeat_interval_ms must be between 10 and 3600000");
  c.heartbeat_interval_ms = hb;
  if (c.state_dir.empty() || c.state_dir[0] != '/') return cfg_error("state_dir must be an absolute path");
  static constexpr const char* kLevels[] = {"trace", "debug", "info",     "warn", "warning",
                                            "error", "err",   "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels))
    return cfg_error("unknown log level '" + c.log_level + "'");
  if (c.coordinator.empty() || c.coordinator_pub.empty()) return cfg_error("coordinator endpoints must not be empty");
  const std::pair<const char*, const std::string&> endpoints[] = {{"coordinator", c.coordinator},
                                                                  {"coordinator_pub", c.coordinator_pub}};
  for (const auto& [key, list] : endpoints) {
    auto& out = std::string_view(key) == "coordinator" ? c.coordinators : c.coordinator_pubs;
    out = split_endpoint_list(list);
    if (out.size() > kMaxCoordinators)
      return cfg_error(std::string(key) + ": more than " + std::to_string(kMaxCoordinators) + " endpoints");
    for (const auto& ep : out)
      if (Status st = transport::check_connect_endpoint(ep); !st.ok())
        return cfg_error(std::string(key) + ": " + st.error().message);
  }
  if (c.coordinators.size() != c.coordinator_pubs.size())
    return cfg_error("coordinator lists " + std::to_string(c.coordinators.size()) +
                     " endpoint(s) and coordinator_pub " + std::to_string(c.coordinator_pubs.size()) +
                     "; give one broadcast endpoint per coordinator, in the same order");
  if (c.agent_key.empty() != c.coordinator_key.empty())
    return cfg_error(
        "agent_key and coordinator_key go together (the agent's secret key and the pinned coordinator key)");
  if (c.services.empty()) return cfg_error("no [service.NAME] section in the config file");
  for (auto& [n, s] : c.services)
    if (s.driver == "container" && s.container_name.empty()) s.container_name = n;
  for (const auto& [n, s] : c.services) {
    if (s.root.empty()) return cfg_error("[service." + n + "] needs root = /absolute/path");
    if (s.driver == "container") {
      if (!s.restart_command.empty())
        return cfg_error("[service." + n +
                         "] restart_command is for driver = binary; a container is restarted by the driver");
      if (!s.slots.empty() || !s.start_command.empty() || !s.stop_command.empty())
        return cfg_error("[service." + n + "] slots, start_command and stop_command are for driver = binary");
      std::vector<std::string> named = s.http_probes;
      named.insert(named.end(), s.tcp_probes.begin(), s.tcp_probes.end());
      named.push_back(s.traffic.haproxy.server);
      if (std::any_of(named.begin(), named.end(), [](const auto& t) { return names_slot(t); }))
        return cfg_error("[service." + n + "] {slot} and {port} name a slot of a binary start-first service");
      if (Status st = check_container_service(s); !st.ok()) return st.error();
    } else if (!s.container_name.empty() || !s.run_args.empty() || !s.runtime_args.empty() || !s.command.empty()) {
      return cfg_error("[service." + n + "] container keys need driver = container");
    } else if (Status st = check_binary_service(s); !st.ok()) {
      return st.error();
    }
    if (s.min_healthy_ms >= s.healthy_deadline_ms)
      return cfg_error("[service." + n + "] min_healthy_ms must be smaller than healthy_deadline_ms");
    if (Status st = traffic::check_settings(s.traffic); !st.ok())
      return cfg_error("[service." + n + "] " + st.error().message);
  }
  return out;
}

Expected<StateArgs> parse_state_args_raw(int argc, const char* const* argv) {
  StateArgs out;
  po::options_description d("gantry-agent state options");
  d.add_options()("help,h", "show this help")("state_dir", po::value<std::string>(&out.state_dir)->required(),
                                              "the agent's state directory (its journal)");
  po::variables_map vm;
  try {
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    const po::positional_options_description none;
    po::store(po::command_line_parser(underscore_long_names(argc, argv)).options(d).positional(none).style(style).run(),
              vm);
    if (vm.count("help")) {
      std::ostringstream os;
      os << "Usage: gantry-agent state --state-dir DIR\n"
            "Prints the journal's current state (snapshot + the records after it) as JSON; reads only.\n\n"
         << d;
      out.help = true;
      out.text = dash_names(os.str());
      return out;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return cfg_error(e.what());
  }
  if (out.state_dir.empty()) return cfg_error("--state-dir must not be empty");
  return out;
}

}  // namespace

Expected<ParsedArgs> parse_args(int argc, const char* const* argv) {
  auto p = parse_args_raw(argc, argv);
  if (!p) return cfg_error(safe_text(p.error().message, 1024));
  return p;
}

Expected<StateArgs> parse_state_args(int argc, const char* const* argv) {
  auto p = parse_state_args_raw(argc, argv);
  if (!p) return cfg_error(safe_text(p.error().message, 1024));
  return p;
}

}  // namespace gantry::agent
