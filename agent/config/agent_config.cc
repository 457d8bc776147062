#include "agent/config/agent_config.h"

#include <unistd.h>

#include <cctype>
#include <charconv>
#include <fstream>
#include <istream>

#include "agent/probe/probe.h"
#include "common/transport/zmq_transport.h"
#include "common/util/names.h"
#include "common/util/shell_words.h"

namespace gantry::agent {

namespace {

Error cfg_error(const std::string& msg) { return make_error("config", msg); }

Expected<Millis> parse_ms(const std::string& key, const std::string& v, Millis min, Millis max) {
  try {
    size_t used = 0;
    long long n = std::stoll(v, &used);
    if (used != v.size() || n < min || n > max) throw std::out_of_range(v);
    return static_cast<Millis>(n);
  } catch (const std::exception&) {
    return cfg_error(key + " must be an integer between " + std::to_string(min) + " and " + std::to_string(max) + ", got '" + v + "'");
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
    if (Status st = HttpProbe::validate(v); !st.ok()) return cfg_error(where + ": " + st.error().message);
    s.http_probes.push_back(v);
  } else if (key == "http_probe_expect") {
    s.http_probe_expect = v;
  } else if (key == "tcp_probe") {
    if (Status st = TcpProbe::validate(v); !st.ok()) return cfg_error(where + ": " + st.error().message);
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
    if (v.empty() || v.find_first_of(" \t") != std::string::npos) return cfg_error(where + " must be one program (podman, docker or a path)");
    s.runtime = v;
  } else if (key == "runtime_args" || key == "run_args" || key == "command") {
    // Repeatable; each value is split like a shell would (quotes, backslashes; no expansion).
    auto words = split_shell_words(v);
    if (!words) return cfg_error(where + ": " + words.error().message);
    auto& dst = key == "runtime_args" ? s.runtime_args : key == "run_args" ? s.run_args : s.command;
    dst.insert(dst.end(), words->begin(), words->end());
  } else if (key == "container_name") {
    if (!valid_container_name(v)) return cfg_error(where + ": '" + v + "' is not a valid container name ([A-Za-z0-9][A-Za-z0-9_.-]*)");
    s.container_name = v;
  } else if (key == "start_order") {
    if (v != "stop-first" && v != "start-first") return cfg_error(where + " must be stop-first or start-first, got '" + v + "'");
    s.start_order = v;
  } else if (key == "stop_timeout_ms") {
    auto n = parse_ms(where, v, 0, 3600 * 1000);
    if (!n) return n.error();
    s.stop_timeout_ms = *n;
  } else if (key == "runtime_timeout_ms") {
    auto n = parse_ms(where, v, 1000, 24LL * 3600 * 1000);
    if (!n) return n.error();
    s.runtime_timeout_ms = *n;
  } else if (key == "retain") {
    auto n = parse_ms(where, v, 1, 1000);
    if (!n) return n.error();
    s.retain = static_cast<uint32_t>(*n);
  } else {
    return cfg_error("unknown key " + where);
  }
  return Status::Ok();
}

// Cross-key checks of a container service (after the whole section was read).
Status check_container_service(const ServiceConfig& s) {
  std::string where = "[service." + s.name + "]";
  if (!valid_container_name(s.container_name))
    return cfg_error(where + " container_name '" + s.container_name + "' is not a valid container name; set container_name");
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

// The agent's options. The command line spells a name with '-' or '_' (--host-id, --host_id);
// the config file uses '_'. Kinds: a flag takes no value on the command line (in the file:
// true/false, yes/no, on/off, 1/0); a value is given once; a list is repeatable and its
// command-line values come first, then the file's.
enum class OptKind { kFlag, kValue, kList };
struct OptSpec {
  const char* name;
  char short_name;
  OptKind kind;
  bool cli_only;  // help, version, config: not settable from the config file
};
constexpr OptSpec kOptions[] = {
    {"help", 'h', OptKind::kFlag, true},
    {"version", 0, OptKind::kFlag, true},
    {"config", 'c', OptKind::kValue, true},
    {"host_id", 0, OptKind::kValue, false},
    {"coordinator", 0, OptKind::kValue, false},
    {"coordinator_pub", 0, OptKind::kValue, false},
    {"state_dir", 0, OptKind::kValue, false},
    {"label", 0, OptKind::kList, false},
    {"insecure_dev", 0, OptKind::kFlag, false},
    {"agent_key", 0, OptKind::kValue, false},
    {"coordinator_key", 0, OptKind::kValue, false},
    {"release_public_key", 0, OptKind::kList, false},
    {"log_level", 0, OptKind::kValue, false},
    {"heartbeat_interval_ms", 0, OptKind::kValue, false},
    {"udp_heartbeats", 0, OptKind::kValue, false},
};

const OptSpec* find_option(const std::string& name) {
  for (const auto& o : kOptions)
    if (name == o.name) return &o;
  return nullptr;
}

// --help text. The option table is laid out as it always was (boost::program_options' format).
constexpr const char* kHelp =
    "Usage: gantry-agent keygen --out PREFIX   (writes PREFIX.key and PREFIX.pub)\n"
    "       gantry-agent state --state-dir DIR (prints the journal's current state as JSON)\n"
    "       gantry-agent --config FILE [--host-id ID] [--coordinator tcp://HOST:7600]\n"
    "                    [--coordinator-pub tcp://HOST:7601] [--state-dir DIR] [--label k=v]...\n"
    "                    [--agent-key FILE --coordinator-key FILE --release-public-key FILE...]\n"
    "                    [--insecure-dev] [--log-level info]\n"
    "\n"
    "\n"
    "gantry-agent options:\n"
    "  -h [ --help ]                         show this help\n"
    "  --version                             print the version\n"
    "  -c [ --config ] arg                   INI config file (services are \n"
    "                                        [service.NAME] sections)\n"
    "\n"
    "settings (command line or config file; the command line wins):\n"
    "  --host-id arg                         host id (default: the hostname)\n"
    "  --coordinator arg (=tcp://127.0.0.1:7600)\n"
    "                                        coordinator ROUTER endpoint\n"
    "  --coordinator-pub arg (=tcp://127.0.0.1:7601)\n"
    "                                        coordinator PUB endpoint\n"
    "  --state-dir arg (=/var/lib/gantry-agent)\n"
    "                                        directory for the agent's journal\n"
    "  --label arg                           label k=v (repeatable)\n"
    "  --insecure-dev                        allow plaintext ZeroMQ and unsigned \n"
    "                                        releases (development only)\n"
    "  --agent-key arg                       this agent's CURVE secret key file \n"
    "                                        (gantry-agent keygen)\n"
    "  --coordinator-key arg                 the coordinator's CURVE public key file\n"
    "                                        (pinned)\n"
    "  --release-public-key arg              ed25519 release public key file \n"
    "                                        (repeatable); only releases signed by \n"
    "                                        one of them install\n"
    "  --log-level arg (=info)               trace|debug|info|warn|error\n"
    "  --heartbeat-interval-ms arg (=1000)   heartbeat interval until the \n"
    "                                        coordinator's welcome says otherwise\n"
    "  --udp-heartbeats arg (=true)          heartbeat by UDP datagrams when the \n"
    "                                        coordinator offers it (false: always \n"
    "                                        over the connection)\n"
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
    "  # driver = container (instead of restart_command; see docs/CONTAINERS.md):\n"
    "  runtime = podman                  (or docker; same grammar)\n"
    "  runtime_args = --runtime runc     (global runtime flags; repeatable, shell-split)\n"
    "  container_name = NAME             (default: the service name)\n"
    "  run_args = --network host -e A=b  (run flags; repeatable, shell-split)\n"
    "  command = --port 8080             (arguments after the image; default: its CMD)\n"
    "  start_order = stop-first          (or start-first: new container up before the old stops)\n"
    "  stop_timeout_ms = 10000\n"
    "  runtime_timeout_ms = 600000\n";

// The values given for each option, in order; `cli` marks the command line's.
struct Given {
  std::vector<std::string> values;
  bool from_cli = false;
};
using GivenMap = std::map<std::string, Given>;

// Records one occurrence; a value or flag given twice in one source is an error, and the
// command line's value of a non-list option wins over the file's.
Status give(GivenMap& m, const OptSpec& o, const std::string& shown, std::string value, bool cli) {
  auto [it, fresh] = m.try_emplace(o.name);
  Given& g = it->second;
  if (fresh) g.from_cli = cli;
  if (o.kind != OptKind::kList) {
    if (!cli && g.from_cli) return Status::Ok();  // the command line wins
    if (!fresh) return cfg_error("option '" + shown + "' cannot be specified more than once");
  }
  g.values.push_back(std::move(value));
  return Status::Ok();
}

std::string trim_ws(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// The command line: --name VALUE, --name=VALUE, -c VALUE, -cVALUE, -h; no positional arguments.
Status parse_command_line(int argc, const char* const* argv, GivenMap& given) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const OptSpec* o = nullptr;
    std::string shown, value;
    bool has_value = false;
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      auto eq = a.find('=');
      std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      for (auto& ch : name)
        if (ch == '-') ch = '_';
      shown = "--" + name;
      o = find_option(name);
      if (!o) return cfg_error("unrecognised option '" + shown + "'");
      if (eq != std::string::npos) {
        has_value = true;
        value = a.substr(eq + 1);
      }
    } else if (a.size() >= 2 && a[0] == '-' && a[1] != '-') {
      for (const auto& spec : kOptions)
        if (spec.short_name == a[1]) o = &spec;
      shown = a.substr(0, 2);
      if (!o) return cfg_error("unrecognised option '" + shown + "'");
      shown = std::string("--") + o->name;
      if (a.size() > 2) {
        has_value = true;
        value = a.substr(2);
      }
    } else {
      return cfg_error("too many positional options have been specified on the command line");
    }
    if (o->kind == OptKind::kFlag) {
      if (has_value) return cfg_error("option '" + shown + "' does not take any arguments");
      value = "true";
    } else if (!has_value) {
      if (i + 1 >= argc) return cfg_error("the required argument for option '" + shown + "' is missing");
      value = argv[++i];
    }
    if (Status st = give(given, *o, shown, std::move(value), true); !st.ok()) return st;
  }
  return Status::Ok();
}

// One `key = value` of the config file that is not a global setting: `service.NAME.key`.
struct FileKey {
  std::string key, value;
};

// The INI file: `#` starts a comment anywhere on a line; `[section]` prefixes the keys after it
// (`[service.web]` + `root = /srv` is `service.web.root`); `key = value` with blanks around both
// trimmed and the value taken literally (no quote processing: quotes are part of the value);
// anything else is an error.
Status parse_config_text(std::istream& in, GivenMap& given, std::vector<FileKey>& others) {
  std::string prefix, line;
  while (std::getline(in, line)) {
    if (auto n = line.find('#'); n != std::string::npos) line.erase(n);
    line = trim_ws(line);
    if (line.empty()) continue;
    if (line.front() == '[' && line.back() == ']' && line.size() >= 2) {
      prefix = line.substr(1, line.size() - 2);
      if (prefix.empty() || prefix.back() != '.') prefix += '.';
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos)
      return cfg_error("the options configuration file contains an invalid line '" + line + "'");
    std::string name = prefix + trim_ws(line.substr(0, eq));
    std::string value = trim_ws(line.substr(eq + 1));
    const OptSpec* o = find_option(name);
    if (!o || o->cli_only) {
      others.push_back({name, value});
      continue;
    }
    if (o->kind == OptKind::kFlag) {
      // A switch in the file takes a boolean; empty means true.
      std::string b = value;
      for (auto& ch : b) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (b.empty() || b == "on" || b == "yes" || b == "1" || b == "true") value = "true";
      else if (b == "off" || b == "no" || b == "0" || b == "false") value = "false";
      else
        return cfg_error("the argument ('" + value + "') for option '" + name +
                         "' is invalid. Valid choices are 'on|off', 'yes|no', '1|0' and 'true|false'");
    }
    if (Status st = give(given, *o, name, std::move(value), false); !st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace

Expected<ParsedArgs> parse_args(int argc, const char* const* argv) {
  ParsedArgs out;
  AgentConfig& c = out.config;
  GivenMap given;
  if (Status st = parse_command_line(argc, argv, given); !st.ok()) return st.error();
  if (given.count("help")) {
    out.help = true;
    out.text = kHelp;
    return out;
  }
  if (given.count("version")) {
    out.version = true;
    return out;
  }
  std::vector<FileKey> service_opts;
  if (given.count("config")) {
    const std::string& path = given["config"].values.front();
    std::ifstream f(path);
    if (!f) return cfg_error("cannot read config file " + path);
    if (Status st = parse_config_text(f, given, service_opts); !st.ok()) return st.error();
  }
  auto one = [&](const char* name, std::string& dst) {
    if (auto it = given.find(name); it != given.end()) dst = it->second.values.front();
  };
  one("host_id", c.host_id);
  one("coordinator", c.coordinator);
  one("coordinator_pub", c.coordinator_pub);
  one("state_dir", c.state_dir);
  one("agent_key", c.agent_key);
  one("coordinator_key", c.coordinator_key);
  one("log_level", c.log_level);
  if (auto it = given.find("insecure_dev"); it != given.end()) c.insecure_dev = it->second.values.front() == "true";
  std::vector<std::string> labels;
  if (auto it = given.find("label"); it != given.end()) labels = it->second.values;
  if (auto it = given.find("release_public_key"); it != given.end()) c.release_public_keys = it->second.values;
  if (auto it = given.find("udp_heartbeats"); it != given.end()) {
    const std::string& v = it->second.values.front();
    if (v == "true" || v == "yes" || v == "on" || v == "1") c.udp_heartbeats = true;
    else if (v == "false" || v == "no" || v == "off" || v == "0") c.udp_heartbeats = false;
    else return cfg_error("udp_heartbeats must be true or false, not '" + v + "'");
  }
  int64_t hb = 1000;
  if (auto it = given.find("heartbeat_interval_ms"); it != given.end()) {
    const std::string& v = it->second.values.front();
    const char* b = v.data();
    const char* e = v.data() + v.size();
    if (b != e && *b == '+') ++b;
    auto [p, ec] = std::from_chars(b, e, hb);
    if (b == e || ec != std::errc() || p != e)
      return cfg_error("the argument ('" + v + "') for option '" + std::string(it->second.from_cli ? "--" : "") +
                       "heartbeat_interval_ms' is invalid");
  }

  for (const auto& o : service_opts) {
    const std::string& k = o.key;
    const std::string prefix = "service.";
    auto dot = k.rfind('.');
    if (k.rfind(prefix, 0) != 0 || dot <= prefix.size() - 1 || dot == k.size() - 1)
      return cfg_error("unknown config key '" + k + "'");
    std::string name = k.substr(prefix.size(), dot - prefix.size());
    std::string key = k.substr(dot + 1);
    if (!is_safe_name(name)) return cfg_error("service name '" + name + "' is not a safe name");
    auto& s = c.services[name];
    s.name = name;
    if (Status st = apply_service_key(s, key, o.value); !st.ok()) return st.error();
  }

  if (!given.count("config")) return cfg_error("--config FILE is required");
  if (c.host_id.empty()) {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) == 0) c.host_id = buf;
  }
  if (!is_safe_name(c.host_id)) return cfg_error("host id '" + c.host_id + "' is not a safe name");
  for (const auto& l : labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos) return cfg_error("label '" + l + "' must be key=value");
    std::string k = l.substr(0, eq), v = l.substr(eq + 1);
    if (!is_label_token(k, false) || !is_label_token(v, true)) return cfg_error("label '" + l + "' has invalid characters");
    c.labels[k] = v;
  }
  if (hb < 10 || hb > 3600 * 1000) return cfg_error("heartbeat_interval_ms must be between 10 and 3600000");
  c.heartbeat_interval_ms = hb;
  if (c.state_dir.empty() || c.state_dir[0] != '/') return cfg_error("state_dir must be an absolute path");
  for (const char* lvl : {"trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"})
    if (c.log_level == lvl) goto level_ok;
  return cfg_error("unknown log level '" + c.log_level + "'");
level_ok:
  if (c.coordinator.empty() || c.coordinator_pub.empty()) return cfg_error("coordinator endpoints must not be empty");
  // The agent speaks tcp:// only (its libzmq is linked without the other transports:
  // agent/zmq_unused_transports.cc).
  const std::pair<const char*, const std::string&> endpoints[] = {{"coordinator", c.coordinator}, {"coordinator_pub", c.coordinator_pub}};
  for (const auto& [key, ep] : endpoints)
    if (Status st = transport::check_connect_endpoint(ep); !st.ok()) return cfg_error(std::string(key) + ": " + st.error().message);
  if (c.agent_key.empty() != c.coordinator_key.empty())
    return cfg_error("agent_key and coordinator_key go together (the agent's secret key and the pinned coordinator key)");
  if (c.services.empty()) return cfg_error("no [service.NAME] section in the config file");
  for (auto& [n, s] : c.services)
    if (s.driver == "container" && s.container_name.empty()) s.container_name = n;
  for (const auto& [n, s] : c.services) {
    if (s.root.empty()) return cfg_error("[service." + n + "] needs root = /absolute/path");
    if (s.driver == "binary" && s.restart_command.empty()) return cfg_error("[service." + n + "] needs restart_command");
    if (s.driver == "container") {
      if (!s.restart_command.empty())
        return cfg_error("[service." + n + "] restart_command is for driver = binary; a container is restarted by the driver");
      if (Status st = check_container_service(s); !st.ok()) return st.error();
    } else if (!s.container_name.empty() || !s.run_args.empty() || !s.runtime_args.empty() || !s.command.empty() ||
               s.start_order != "stop-first") {
      return cfg_error("[service." + n + "] container keys need driver = container");
    }
    if (s.min_healthy_ms >= s.healthy_deadline_ms)
      return cfg_error("[service." + n + "] min_healthy_ms must be smaller than healthy_deadline_ms");
  }
  return out;
}

}  // namespace gantry::agent
