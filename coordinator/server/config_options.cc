#include "coordinator/server/config_options.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <optional>
#include <sstream>

#include <unistd.h>

#include "common/security/keys.h"
#include "common/transport/zmq_transport.h"
#include "common/util/names.h"
#include "common/util/text.h"
#include "coordinator/analysis/prometheus_client.h"
#include "coordinator/etcd/etcd_client.h"

namespace gantry::coordinator {

namespace po = boost::program_options;

namespace {

Error usage(const std::string& msg) { return make_error("usage", msg); }

// A host name, an IPv4 address or a bracketed IPv6 address (with an optional %zone): what a
// bind or listen address may name. "*" (every interface) only where `star` allows it.
bool valid_host(const std::string& host, bool star) {
  if (host.empty()) return false;
  if (host == "*") return star;
  if (host.front() == '[') {
    if (host.size() < 4 || host.back() != ']') return false;
    const std::string inner = host.substr(1, host.size() - 2);
    const auto pct = inner.find('%');
    const std::string addr = inner.substr(0, pct);
    const std::string zone = pct == std::string::npos ? "x" : inner.substr(pct + 1);
    return addr.find(':') != std::string::npos &&
           addr.find_first_not_of("0123456789abcdefABCDEF:.") == std::string::npos && !zone.empty() &&
           zone.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
               std::string::npos;
  }
  return host.front() != '-' && host.front() != '.' &&
         host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") ==
             std::string::npos;
}

// A ZeroMQ endpoint the coordinator binds: tcp://HOST:PORT (HOST may be * or an interface name,
// PORT may be * or 0 for a free one) or ipc://PATH. Checked here so a typo is a usage error
// naming the value, not a failed bind after the store was opened.
Status check_bind_endpoint(const std::string& flag, const std::string& ep) {
  auto bad = [&](const std::string& why) {
    return usage(flag + ": endpoint '" + ep + "' " + why + " (want tcp://HOST:PORT, HOST or PORT may be *)");
  };
  if (ep.rfind("ipc://", 0) == 0) {
    if (ep.size() == 6) return usage(flag + ": endpoint '" + ep + "' has no path");
    return Status::Ok();
  }
  if (ep.rfind("tcp://", 0) != 0) return bad("is not tcp:// or ipc://");
  const std::string rest = ep.substr(6);
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) return bad("has no port");
  const std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (port != "*" && !parse_port(port)) return bad("has no port between 0 and 65535");
  if (host.empty()) return bad("has no host");
  if (!valid_host(host, true)) return bad("has a malformed host");
  return Status::Ok();
}

// HOST:PORT for a listening socket (HTTP, UDP heartbeats); PORT 0 picks a free one.
Status check_listen_address(const std::string& flag, const std::string& v) {
  const auto hp = transport::split_host_port(v);
  if (!hp) return usage(flag + " '" + v + "' is not HOST:PORT");
  if (!parse_port(hp->port)) return usage(flag + " '" + v + "' has no port between 0 and 65535");
  const std::string host = hp->ipv6_literal ? "[" + hp->host + "]" : hp->host;
  if (!valid_host(host, false)) return usage(flag + " '" + v + "' has a malformed host (want HOST:PORT, [IPV6]:PORT)");
  return Status::Ok();
}

// An unsigned number of the option `flag` in min..max, written in decimal digits only ("-5",
// "+5", "5ms", "" are refused rather than wrapped or truncated).
Expected<uint32_t> parse_uint(const std::string& flag, const std::string& v, uint32_t min, uint32_t max,
                              const char* range_note = "") {
  uint64_t n = 0;
  const char* b = v.data();
  const char* e = v.data() + v.size();
  auto [p, ec] = std::from_chars(b, e, n);
  if (b == e || ec != std::errc() || p != e || n < min || n > max)
    return usage(flag + " must be " + std::to_string(min) + ".." + std::to_string(max) + range_note + ", got " + v);
  return static_cast<uint32_t>(n);
}

// "NAME=PATH" -> (NAME, PATH); a bare PATH is named after its file (alice.pub -> alice).
std::pair<std::string, std::string> named_path(const std::string& v) {
  auto eq = v.find('=');
  if (eq != std::string::npos && eq > 0) return {v.substr(0, eq), v.substr(eq + 1)};
  std::string base = v.substr(v.find_last_of('/') + 1);
  if (auto dot = base.rfind('.'); dot != std::string::npos && dot > 0) base = base.substr(0, dot);
  return {base, v};
}

// --store and the options that go with it.
Status check_store_options(Config& cfg, const std::string& lease_ttl) {
  auto ttl = parse_uint("--lease-ttl", lease_ttl, 2, 60);
  if (!ttl) return ttl.error();
  cfg.lease_ttl_s = *ttl;
  if (!cfg.etcd()) {
    if (cfg.store != "sqlite") return usage("--store must be sqlite or etcd://HOST:PORT,..., got '" + cfg.store + "'");
    return Status::Ok();
  }
  if (cfg.store.rfind("etcd://", 0) != 0)
    return usage("--store must be sqlite or etcd://HOST:PORT,..., got '" + cfg.store + "'");
  if (auto u = etcd::parse_store_uri(cfg.store); !u) return usage("--store: " + u.error().message);
  if (cfg.etcd_cert.empty() != cfg.etcd_key.empty()) return usage("--etcd-cert and --etcd-key go together");
  if (!cfg.etcd_cert.empty() && cfg.etcd_ca.empty()) return usage("--etcd-cert needs --etcd-ca (TLS)");
  if (cfg.etcd_prefix.empty() || cfg.etcd_prefix.front() != '/' || cfg.etcd_prefix.back() != '/' ||
      cfg.etcd_prefix.size() > 128 || !is_safe_name(cfg.etcd_prefix.substr(1, cfg.etcd_prefix.size() - 2)))
    return usage("--etcd-prefix must be /NAME/ with NAME a safe name ([A-Za-z0-9._-+@:], 1..126), got '" +
                 cfg.etcd_prefix + "'");
  if (cfg.name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) cfg.name = host;
  }
  if (!is_safe_name(cfg.name))
    return usage("--name must be a safe name ([A-Za-z0-9._-+@:], 1..128), got '" + cfg.name + "'");
  if (!cfg.advertise_host.empty() && !valid_host(cfg.advertise_host, false))
    return usage("--advertise-host: '" + cfg.advertise_host + "' is not a host name or address");
  return Status::Ok();
}

constexpr const char* kUsage =
    "gantry-coordinator: plans and drives rollouts across the fleet's agents.\n\n"
    "Usage: gantry-coordinator [options]\n"
    "       gantry-coordinator keygen --out PREFIX   (writes PREFIX.key and PREFIX.pub)\n"
    "       gantry-coordinator migrate --from sqlite:PATH --to etcd://HOST:PORT,...   (see migrate --help)\n"
    "Example: gantry-coordinator --config /etc/gantry/coordinator.conf\n\n";

// Everything parse_config_options does; its messages may hold raw bytes of argv or the file,
// which parse_config_options escapes once on the way out.
Expected<ConfigOptions> parse_raw(const std::vector<std::string>& args) {
  ConfigOptions out;
  Config& cfg = out.config;
  std::string config_file, server_key;
  std::string heartbeat_interval = std::to_string(cfg.heartbeat_interval_ms),
              heartbeat_misses = std::to_string(cfg.heartbeat_misses),
              coordinator_heartbeat = std::to_string(cfg.coordinator_heartbeat_ms),
              order_resend = std::to_string(cfg.order_resend_ms), restart_grace = std::to_string(cfg.restart_grace_ms),
              io_threads = std::to_string(cfg.io_threads), lease_ttl = std::to_string(cfg.lease_ttl_s);
  std::vector<std::string> admin_keys, accept_agent_keys, prometheus;

  po::options_description cli("Options");
  cli.add_options()("help,h", "show this help")("version", "print the version")(
      "config", po::value(&config_file),
      "INI config file: KEY = VALUE, keys are the long options below; command-line options win");
  po::options_description settings("Settings (command line or config file)");
  settings.add_options()("state-dir", po::value(&cfg.state_dir)->default_value(cfg.state_dir),
                         "database, artifacts, endpoints.json")(
      "agent-endpoint", po::value(&cfg.agent_endpoint)->default_value(cfg.agent_endpoint), "ZeroMQ ROUTER for agents")(
      "pub-endpoint", po::value(&cfg.pub_endpoint)->default_value(cfg.pub_endpoint),
      "ZeroMQ PUB for fleet-wide signals")(
      "operator-endpoint", po::value(&cfg.operator_endpoint)->default_value(cfg.operator_endpoint),
      "ZeroMQ ROUTER for the gantry CLI")("http-address", po::value(&cfg.http_address)->default_value(cfg.http_address),
                                          "HOST:PORT for /metrics, /status and the status page (empty: off)")(
      "udp-heartbeat", po::value(&cfg.udp_heartbeat)->default_value(cfg.udp_heartbeat),
      "where agents may send heartbeats as authenticated UDP datagrams: auto (the agent endpoint's address and port "
      "number, UDP), HOST:PORT, or off (every heartbeat over the agents' connections)")(
      "heartbeat-interval-ms", po::value(&heartbeat_interval)->default_value(heartbeat_interval),
      "agents heartbeat this often, 1..3600000")(
      "heartbeat-misses", po::value(&heartbeat_misses)->default_value(heartbeat_misses),
      "missed heartbeats before a host is unknown (and, for agents, before the coordinator is), 1..1000")(
      "coordinator-heartbeat-ms", po::value(&coordinator_heartbeat)->default_value(coordinator_heartbeat),
      "the coordinator heartbeats an agent only after this long without sending it anything (agents that support it "
      "give the "
      "coordinator up after misses x this); at least --heartbeat-interval-ms; 0: every heartbeat interval")(
      "order-resend-ms", po::value(&order_resend)->default_value(order_resend),
      "resend period of unacknowledged orders, 10..3600000")(
      "restart-grace-ms", po::value(&restart_grace)->default_value(restart_grace),
      "after a restart, hosts known from before count as reachable this long (at least the heartbeat timeout) while "
      "they reconnect")("io-threads", po::value(&io_threads)->default_value(io_threads),
                        "ZeroMQ I/O threads, 1..16 (CURVE handshakes and socket I/O; with 2 or more the PUB's "
                        "subscribers are spread over all but the first)")(
      "server-key", po::value(&server_key),
      "CURVE secret key file of this coordinator (gantry-coordinator keygen); agents and operators pin its public "
      "half")(
      "admin-key", po::value(&admin_keys)->composing(),
      "[NAME=]PUBFILE: enroll this operator key as admin at start (repeatable; NAME defaults to the file name)")(
      "accept-agent-key", po::value(&accept_agent_keys)->composing(),
      "HOST=PUBFILE: accept this agent key for HOST at start (repeatable; otherwise `gantry keys accept`)")(
      "prometheus", po::value(&prometheus)->composing(),
      "[NAME=]http://HOST:PORT[/PREFIX]: a Prometheus server plans' metric analysis may query (repeatable; NAME "
      "defaults to 'default')")("insecure-dev", po::bool_switch(&cfg.insecure_dev),
                                "run without CURVE keys (development only)")(
      "store", po::value(&cfg.store)->default_value(cfg.store),
      "sqlite (the state directory's coordinator.db) or etcd://HOST:PORT,HOST:PORT,... (coordinators sharing etcd "
      "elect a leader; the others stand by)")("etcd-ca", po::value(&cfg.etcd_ca), "PEM CA file: talk TLS to etcd")(
      "etcd-cert", po::value(&cfg.etcd_cert), "PEM client certificate for etcd")("etcd-key", po::value(&cfg.etcd_key),
                                                                                 "PEM client key for etcd")(
      "etcd-prefix", po::value(&cfg.etcd_prefix)->default_value(cfg.etcd_prefix),
      "every etcd key of this installation starts with it")(
      "name", po::value(&cfg.name), "this coordinator's name among its peers (default: the host name)")(
      "lease-ttl", po::value(&lease_ttl)->default_value(lease_ttl),
      "seconds, 2..60: the leader's etcd lease; a standby takes over within about this long")(
      "advertise-host", po::value(&cfg.advertise_host),
      "host name or address peers, agents and operators reach this coordinator's endpoints at")(
      "log-level", po::value(&out.log_level)->default_value(out.log_level), "trace|debug|info|warn|error");
  po::options_description all;
  all.add(cli).add(settings);

  po::variables_map vm;
  try {
    // No abbreviations (--state is not --state-dir) and no stray words.
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    const po::positional_options_description none;
    po::store(po::command_line_parser(args).options(all).positional(none).style(style).run(), vm);
    if (vm.count("help")) {
      std::ostringstream os;
      os << kUsage << all;
      out.help = true;
      out.text = os.str();
      return out;
    }
    if (vm.count("version")) {
      out.version = true;
      return out;
    }
    if (vm.count("config")) {
      const std::string& path = vm["config"].as<std::string>();  // config_file is set by notify()
      std::ifstream in(path);
      if (!in) return usage("--config: cannot read config file " + path);
      po::store(po::parse_config_file(in, settings), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return usage(e.what());
  }

  if (cfg.state_dir.empty()) return usage("--state-dir must not be empty");
  const std::pair<const char*, const std::string&> endpoints[] = {{"--agent-endpoint", cfg.agent_endpoint},
                                                                  {"--pub-endpoint", cfg.pub_endpoint},
                                                                  {"--operator-endpoint", cfg.operator_endpoint}};
  for (const auto& [flag, ep] : endpoints)
    if (Status st = check_bind_endpoint(flag, ep); !st.ok()) return st.error();
  if (!cfg.http_address.empty())
    if (Status st = check_listen_address("--http-address", cfg.http_address); !st.ok()) return st.error();
  if (cfg.udp_heartbeat != "auto" && cfg.udp_heartbeat != "off")
    if (Status st = check_listen_address("--udp-heartbeat", cfg.udp_heartbeat); !st.ok())
      return usage(st.error().message + "; or auto, or off");
  static constexpr const char* kLevels[] = {"trace", "debug", "info",     "warn", "warning",
                                            "error", "err",   "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), out.log_level) == std::end(kLevels))
    return usage("--log-level must be trace, debug, info, warn, error, critical or off, got '" + out.log_level + "'");

  auto hb = parse_uint("--heartbeat-interval-ms", heartbeat_interval, 1, 3600000);
  if (!hb) return hb.error();
  cfg.heartbeat_interval_ms = *hb;
  auto misses = parse_uint("--heartbeat-misses", heartbeat_misses, 1, 1000);
  if (!misses) return misses.error();
  cfg.heartbeat_misses = *misses;
  auto chb = parse_uint("--coordinator-heartbeat-ms", coordinator_heartbeat, 0, 3600000);
  if (!chb) return chb.error();
  cfg.coordinator_heartbeat_ms = *chb;
  auto resend = parse_uint("--order-resend-ms", order_resend, 10, 3600000);
  if (!resend) return resend.error();
  cfg.order_resend_ms = *resend;
  auto grace = parse_uint("--restart-grace-ms", restart_grace, 0, 86400000, " (a day)");
  if (!grace) return grace.error();
  cfg.restart_grace_ms = *grace;
  auto threads = parse_uint("--io-threads", io_threads, 1, 16);
  if (!threads) return threads.error();
  cfg.io_threads = *threads;
  if (cfg.coordinator_heartbeat_ms != 0 && cfg.coordinator_heartbeat_ms < cfg.heartbeat_interval_ms)
    out.warnings.push_back("--coordinator-heartbeat-ms " + std::to_string(cfg.coordinator_heartbeat_ms) +
                           " is below --heartbeat-interval-ms " + std::to_string(cfg.heartbeat_interval_ms) +
                           "; using the interval");

  if (!server_key.empty()) {
    auto kp = security::read_curve_secret(server_key);
    if (!kp) return usage("--server-key: " + kp.error().message);
    cfg.curve.public_key = kp->public_z85;
    cfg.curve.secret_key = kp->secret_z85;
  }
  for (const auto& v : admin_keys) {
    auto [name, path] = named_path(v);
    if (!is_safe_name(name))
      return usage("--admin-key: operator name '" + name + "' of '" + v +
                   "' is not a safe name ([A-Za-z0-9._-+@:], 1..128)");
    auto key = security::read_curve_public(path);
    if (!key) return usage("--admin-key: " + key.error().message);
    cfg.admin_keys.emplace_back(name, *key);
  }
  for (const auto& v : accept_agent_keys) {
    auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0) return usage("--accept-agent-key wants HOST=PUBFILE, got '" + v + "'");
    const std::string host = v.substr(0, eq);
    if (!is_safe_name(host))
      return usage("--accept-agent-key: host '" + host + "' is not a safe name ([A-Za-z0-9._-+@:], 1..128)");
    auto key = security::read_curve_public(v.substr(eq + 1));
    if (!key) return usage("--accept-agent-key: " + key.error().message);
    cfg.accept_agent_keys.emplace_back(host, *key);
  }
  for (const auto& v : prometheus) {
    const auto eq = v.find('=');
    const std::string name = eq == std::string::npos ? "default" : v.substr(0, eq);
    const std::string url = eq == std::string::npos ? v : v.substr(eq + 1);
    bool name_ok = !name.empty() && name.size() <= 64;
    for (char c : name)
      if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_'))
        name_ok = false;
    if (!name_ok) return usage("--prometheus: name '" + name + "' of '" + v + "' is not a-z, 0-9 and _ (1..64)");
    auto u = analysis::parse_server_url(url);
    if (!u) return usage("--prometheus: " + u.error().message);
    if (!cfg.prometheus.emplace(name, u->origin + u->prefix).second)
      return usage("--prometheus: server '" + name + "' is given twice");
  }
  if (Status st = check_store_options(cfg, lease_ttl); !st.ok()) return st.error();
  // With standbys, agents must notice a leader whose machine is gone (no TCP reset) soon after
  // a standby can take over: they give a silent coordinator misses x this period.
  if (cfg.etcd() && (cfg.coordinator_heartbeat_ms == 0 || cfg.coordinator_heartbeat_ms > cfg.lease_ttl_s * 500)) {
    const uint32_t lowered = std::max<uint32_t>(cfg.lease_ttl_s * 500, cfg.heartbeat_interval_ms);
    if (cfg.coordinator_heartbeat_ms != 0 && lowered < cfg.coordinator_heartbeat_ms) {
      out.warnings.push_back("--coordinator-heartbeat-ms " + std::to_string(cfg.coordinator_heartbeat_ms) +
                             " lowered to " + std::to_string(lowered) +
                             " (half the lease TTL): agents leave a leader that went silent within misses x this");
      cfg.coordinator_heartbeat_ms = lowered;
    }
  }
  if (cfg.insecure_dev && cfg.curve.enabled()) return usage("--insecure-dev and --server-key exclude each other");
  if (!cfg.insecure_dev && !cfg.curve.enabled())
    // Our own text only (no value in it): its line breaks stay.
    return make_error("no_keys",
                      "no CURVE keys configured; refusing to start.\n"
                      "Create one with `gantry-coordinator keygen --out /etc/gantry/coordinator` and pass\n"
                      "--server-key /etc/gantry/coordinator.key, or pass --insecure-dev for a development setup on a "
                      "trusted machine.");
  return out;
}

}  // namespace

Expected<ConfigOptions> parse_config_options(const std::vector<std::string>& args) {
  auto o = parse_raw(args);
  if (!o && o.error().code != "no_keys") return usage(safe_text(o.error().message, 1024));
  return o;
}

}  // namespace gantry::coordinator
