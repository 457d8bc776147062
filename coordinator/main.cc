// gantry-coordinator: parse options, build the real parts, run the loop.
#include <boost/program_options.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>
#include <utility>
#include <vector>

#include "common/security/keys.h"
#include "common/util/log.h"
#include "common/util/rlimit.h"
#include "common/util/sd_notify.h"
#include "common/version.h"
#include "coordinator/rollout/state_machine.h"
#include "coordinator/server/coordinator.h"

namespace po = boost::program_options;

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }
}  // namespace

// "NAME=PATH" -> (NAME, PATH); a bare PATH is named after its file (alice.pub -> alice).
static std::pair<std::string, std::string> named_path(const std::string& v) {
  auto eq = v.find('=');
  if (eq != std::string::npos && eq > 0) return {v.substr(0, eq), v.substr(eq + 1)};
  std::string base = v.substr(v.find_last_of('/') + 1);
  if (auto dot = base.rfind('.'); dot != std::string::npos && dot > 0) base = base.substr(0, dot);
  return {base, v};
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "keygen") {
    return gantry::security::curve_keygen_main("gantry-coordinator", std::vector<std::string>(argv + 2, argv + argc));
  }
  // The integration tests set this: every rollout step re-checks its incremental bookkeeping.
  if (const char* c = std::getenv("GANTRY_ROLLOUT_SELF_CHECK"); c != nullptr && std::string(c) == "1") {
    gantry::rollout::set_self_check(true);
  }
  gantry::coordinator::Config cfg;
  std::string config_file, log_level, server_key;
  std::vector<std::string> admin_keys, accept_agent_keys;
  po::options_description desc(
      "gantry-coordinator: plans and drives rollouts across the fleet's agents.\n\n"
      "Usage: gantry-coordinator [options]\n"
      "       gantry-coordinator keygen --out PREFIX   (writes PREFIX.key and PREFIX.pub)\n"
      "Example: gantry-coordinator --config /etc/gantry/coordinator.conf\n\nOptions");
  desc.add_options()
      ("help,h", "show this help")
      ("version", "print the version")
      ("config", po::value(&config_file), "INI config file; command-line options win")
      ("state-dir", po::value(&cfg.state_dir)->default_value(cfg.state_dir), "database, artifacts, endpoints.json")
      ("agent-endpoint", po::value(&cfg.agent_endpoint)->default_value(cfg.agent_endpoint), "ZeroMQ ROUTER for agents")
      ("pub-endpoint", po::value(&cfg.pub_endpoint)->default_value(cfg.pub_endpoint), "ZeroMQ PUB for fleet-wide signals")
      ("operator-endpoint", po::value(&cfg.operator_endpoint)->default_value(cfg.operator_endpoint), "ZeroMQ ROUTER for the gantry CLI")
      ("http-address", po::value(&cfg.http_address)->default_value(cfg.http_address), "HOST:PORT for /metrics, /status and the status page (empty: off)")
      ("udp-heartbeat", po::value(&cfg.udp_heartbeat)->default_value(cfg.udp_heartbeat),
       "where agents may send heartbeats as authenticated UDP datagrams: auto (the agent endpoint's address and port "
       "number, UDP), HOST:PORT, or off (every heartbeat over the agents' connections)")
      ("heartbeat-interval-ms", po::value(&cfg.heartbeat_interval_ms)->default_value(cfg.heartbeat_interval_ms), "agents heartbeat this often")
      ("heartbeat-misses", po::value(&cfg.heartbeat_misses)->default_value(cfg.heartbeat_misses), "missed heartbeats before a host is unknown (and, for agents, before the coordinator is)")
      ("coordinator-heartbeat-ms", po::value(&cfg.coordinator_heartbeat_ms)->default_value(cfg.coordinator_heartbeat_ms),
       "the coordinator heartbeats an agent only after this long without sending it anything (agents that support it give the "
       "coordinator up after misses x this); at least --heartbeat-interval-ms; 0: every heartbeat interval")
      ("order-resend-ms", po::value(&cfg.order_resend_ms)->default_value(cfg.order_resend_ms), "resend period of unacknowledged orders")
      ("restart-grace-ms", po::value(&cfg.restart_grace_ms)->default_value(cfg.restart_grace_ms),
       "after a restart, hosts known from before count as reachable this long (at least the heartbeat timeout) while they reconnect")
      ("io-threads", po::value(&cfg.io_threads)->default_value(cfg.io_threads),
       "ZeroMQ I/O threads, 1..16 (CURVE handshakes and socket I/O; with 2 or more the PUB's subscribers are spread over all but the first)")
      ("server-key", po::value(&server_key), "CURVE secret key file of this coordinator (gantry-coordinator keygen); agents and operators pin its public half")
      ("admin-key", po::value(&admin_keys)->composing(), "[NAME=]PUBFILE: enroll this operator key as admin at start (repeatable; NAME defaults to the file name)")
      ("accept-agent-key", po::value(&accept_agent_keys)->composing(), "HOST=PUBFILE: accept this agent key for HOST at start (repeatable; otherwise `gantry keys accept`)")
      ("insecure-dev", po::bool_switch(&cfg.insecure_dev), "run without CURVE keys (development only)")
      ("log-level", po::value(&log_level)->default_value("info"), "trace|debug|info|warn|error");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("config")) {
      std::ifstream in(vm["config"].as<std::string>());
      if (!in) {
        std::cerr << "gantry-coordinator: cannot read config file " << vm["config"].as<std::string>() << "\n";
        return 2;
      }
      po::store(po::parse_config_file(in, desc), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "gantry-coordinator: " << e.what() << "\n(see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "gantry-coordinator " << gantry::kGantryVersion << "\n";
    return 0;
  }
  gantry::log::setup("gantry-coordinator", log_level);
  auto log = gantry::log::get("coordinator");
  if (!server_key.empty()) {
    auto kp = gantry::security::read_curve_secret(server_key);
    if (!kp) {
      std::cerr << "gantry-coordinator: --server-key: " << kp.error().message << "\n";
      return 2;
    }
    cfg.curve.public_key = kp->public_z85;
    cfg.curve.secret_key = kp->secret_z85;
  }
  for (const auto& v : admin_keys) {
    auto [name, path] = named_path(v);
    auto key = gantry::security::read_curve_public(path);
    if (!key) {
      std::cerr << "gantry-coordinator: --admin-key: " << key.error().message << "\n";
      return 2;
    }
    cfg.admin_keys.emplace_back(name, *key);
  }
  for (const auto& v : accept_agent_keys) {
    auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "gantry-coordinator: --accept-agent-key wants HOST=PUBFILE, got '" << v << "'\n";
      return 2;
    }
    auto key = gantry::security::read_curve_public(v.substr(eq + 1));
    if (!key) {
      std::cerr << "gantry-coordinator: --accept-agent-key: " << key.error().message << "\n";
      return 2;
    }
    cfg.accept_agent_keys.emplace_back(v.substr(0, eq), *key);
  }
  if (cfg.heartbeat_interval_ms == 0 || cfg.heartbeat_interval_ms > 3600000 || cfg.heartbeat_misses == 0 ||
      cfg.heartbeat_misses > 1000 || cfg.coordinator_heartbeat_ms > 3600000) {
    std::cerr << "gantry-coordinator: --heartbeat-interval-ms and --coordinator-heartbeat-ms must be at most 3600000 "
                 "(the interval at least 1), --heartbeat-misses 1..1000\n";
    return 2;
  }
  // Unsigned options: Boost reads "-5" as 2^32-5, so the ranges also catch negative numbers.
  if (cfg.io_threads < 1 || cfg.io_threads > 16) {
    std::cerr << "gantry-coordinator: --io-threads must be 1..16, got " << cfg.io_threads << "\n";
    return 2;
  }
  if (cfg.order_resend_ms < 10 || cfg.order_resend_ms > 3600000) {
    std::cerr << "gantry-coordinator: --order-resend-ms must be 10..3600000, got " << cfg.order_resend_ms << "\n";
    return 2;
  }
  if (cfg.restart_grace_ms > 86400000) {
    std::cerr << "gantry-coordinator: --restart-grace-ms must be 0..86400000 (a day), got " << cfg.restart_grace_ms << "\n";
    return 2;
  }
  if (cfg.coordinator_heartbeat_ms != 0 && cfg.coordinator_heartbeat_ms < cfg.heartbeat_interval_ms) {
    log->warn("--coordinator-heartbeat-ms {} is below --heartbeat-interval-ms {}; using the interval", cfg.coordinator_heartbeat_ms,
              cfg.heartbeat_interval_ms);
  }
  if (cfg.insecure_dev && cfg.curve.enabled()) {
    std::cerr << "gantry-coordinator: --insecure-dev and --server-key exclude each other\n";
    return 2;
  }
  if (!cfg.insecure_dev && !cfg.curve.enabled()) {
    std::cerr << "gantry-coordinator: no CURVE keys configured; refusing to start.\n"
                 "Create one with `gantry-coordinator keygen --out /etc/gantry/coordinator` and pass\n"
                 "--server-key /etc/gantry/coordinator.key, or pass --insecure-dev for a development setup on a trusted machine.\n";
    return 2;
  }
  if (cfg.insecure_dev) log->warn("INSECURE: running without CURVE; any process that reaches the sockets can act as an agent or operator");

  // One descriptor per agent connection: 10,000 agents need far more than the usual soft 1024.
  auto nofile = gantry::raise_fd_limit();
  if (nofile < 16384) log->warn("open-file limit is {}; each agent connection needs one descriptor", nofile);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  gantry::SystemClock clock;
  gantry::coordinator::Coordinator coord(cfg, clock);
  if (auto s = coord.start(); !s.ok()) {
    log->critical("cannot start: {}", s.error().message);
    return 1;
  }
  gantry::sd::notify("READY=1");
  // WATCHDOG=1 at half the interval systemd asked for, but only while the event loop turns (it
  // wakes at least every 100 ms): a loop stuck for longer than `stall` stops the pings, and
  // systemd restarts the daemon once WatchdogSec= passes without one.
  const uint64_t wd_usec = gantry::sd::watchdog_usec();
  std::thread watchdog;
  std::atomic<bool> wd_stop{false};
  if (wd_usec > 0) {
    watchdog = std::thread([&] {
      using namespace std::chrono;
      const auto every = microseconds(std::max<uint64_t>(wd_usec / 2, 1000));
      const auto stall = std::max<steady_clock::duration>(every, seconds(2));
      uint64_t last_turns = coord.loop_turns();
      auto last_change = steady_clock::now();
      auto next = last_change;
      bool warned = false;
      while (!wd_stop) {
        auto now = steady_clock::now();
        if (uint64_t turns = coord.loop_turns(); turns != last_turns) {
          last_turns = turns;
          last_change = now;
        }
        if (now >= next) {
          if (now - last_change <= stall) {
            gantry::sd::notify("WATCHDOG=1");
            warned = false;
          } else if (!warned) {
            log->error("event loop stuck for {} ms; withholding the watchdog ping",
                       duration_cast<milliseconds>(now - last_change).count());
            warned = true;
          }
          next = now + every;
        }
        std::this_thread::sleep_for(std::min<steady_clock::duration>(next - now, milliseconds(20)));
      }
    });
  }
  coord.run(g_stop);
  gantry::sd::notify("STOPPING=1");
  wd_stop = true;
  if (watchdog.joinable()) watchdog.join();
  return 0;
}
