#include "agent/config/agent_config.h"

#include <unistd.h>

#include <boost/program_options.hpp>
#include <cctype>
#include <fstream>
#include <sstream>

#include "agent/probe/probe.h"
#include "common/util/names.h"
#include "common/util/shell_words.h"

namespace gantry::agent {
namespace po = boost::program_options;

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

}  // namespace

Expected<ParsedArgs> parse_args(int argc, const char* const* argv) {
  ParsedArgs out;
  AgentConfig& c = out.config;
  std::string config_file;
  std::vector<std::string> labels;
  int64_t hb = 1000;

  po::options_description cli("gantry-agent options");
  cli.add_options()
      ("help,h", "show this help")
      ("version", "print the version")
      ("config,c", po::value<std::string>(&config_file), "INI config file (services are [service.NAME] sections)");
  po::options_description common("settings (command line or config file; the command line wins)");
  common.add_options()
      ("host_id", po::value<std::string>(&c.host_id), "host id (default: the hostname)")
      ("coordinator", po::value<std::string>(&c.coordinator)->default_value(c.coordinator), "coordinator ROUTER endpoint")
      ("coordinator_pub", po::value<std::string>(&c.coordinator_pub)->default_value(c.coordinator_pub), "coordinator PUB endpoint")
      ("state_dir", po::value<std::string>(&c.state_dir)->default_value(c.state_dir), "directory for the agent's journal")
      ("label", po::value<std::vector<std::string>>(&labels)->composing(), "label k=v (repeatable)")
      ("insecure_dev", po::bool_switch(&c.insecure_dev), "allow plaintext ZeroMQ and unsigned releases (development only)")
      ("agent_key", po::value<std::string>(&c.agent_key), "this agent's CURVE secret key file (gantry-agent keygen)")
      ("coordinator_key", po::value<std::string>(&c.coordinator_key), "the coordinator's CURVE public key file (pinned)")
      ("release_public_key", po::value<std::vector<std::string>>(&c.release_public_keys)->composing(),
       "ed25519 release public key file (repeatable); only releases signed by one of them install")
      ("log_level", po::value<std::string>(&c.log_level)->default_value(c.log_level), "trace|debug|info|warn|error")
      ("heartbeat_interval_ms", po::value<int64_t>(&hb)->default_value(hb), "heartbeat interval until the coordinator's welcome says otherwise");
  po::options_description all;
  all.add(cli).add(common);

  // Boost spells a long option with '-' and '_' as two names; accept both spellings on the command line.
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      auto eq = a.find('=');
      std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      for (auto& ch : name) if (ch == '-') ch = '_';
      a = "--" + name + (eq == std::string::npos ? "" : a.substr(eq));
    }
    args.push_back(a);
  }

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).run(), vm);
    if (vm.count("help")) {
      std::ostringstream os;
      os << "Usage: gantry-agent keygen --out PREFIX   (writes PREFIX.key and PREFIX.pub)\n"
            "       gantry-agent --config FILE [--host-id ID] [--coordinator tcp://HOST:7600]\n"
            "                    [--coordinator-pub tcp://HOST:7601] [--state-dir DIR] [--label k=v]...\n"
            "                    [--agent-key FILE --coordinator-key FILE --release-public-key FILE...]\n"
            "                    [--insecure-dev] [--log-level info]\n\n"
         << all
         << "\nService sections in the config file:\n"
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
      out.help = true;
      out.text = os.str();
      // Options are registered with config-file spelling (host_id); show the command-line one.
      for (size_t i = out.text.find("--"); i != std::string::npos; i = out.text.find("--", i + 2))
        for (size_t j = i + 2; j < out.text.size() && (std::isalnum(static_cast<unsigned char>(out.text[j])) || out.text[j] == '_'); ++j)
          if (out.text[j] == '_') out.text[j] = '-';
      return out;
    }
    if (vm.count("version")) {
      out.version = true;
      return out;
    }
    std::vector<po::option> service_opts;
    if (vm.count("config")) {
      std::ifstream f(vm["config"].as<std::string>());
      if (!f) return cfg_error("cannot read config file " + vm["config"].as<std::string>());
      auto parsed = po::parse_config_file(f, common, /*allow_unregistered=*/true);
      for (auto& o : parsed.options)
        if (o.unregistered) service_opts.push_back(o);
      po::store(parsed, vm);
    }
    po::notify(vm);

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
  } catch (const po::error& e) {
    return cfg_error(e.what());
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
