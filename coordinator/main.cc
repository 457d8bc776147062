// gantry-coordinator: parse options, build the real parts, run the loop.
#include <boost/program_options.hpp>
#include <systemd/sd-daemon.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/util/log.h"
#include "common/version.h"
#include "coordinator/server/coordinator.h"

namespace po = boost::program_options;

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  gantry::coordinator::Config cfg;
  std::string config_file, log_level;
  po::options_description desc(
      "gantry-coordinator: plans and drives rollouts across the fleet's agents.\n\n"
      "Usage: gantry-coordinator [options]\n"
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
      ("heartbeat-interval-ms", po::value(&cfg.heartbeat_interval_ms)->default_value(cfg.heartbeat_interval_ms), "heartbeat period")
      ("heartbeat-misses", po::value(&cfg.heartbeat_misses)->default_value(cfg.heartbeat_misses), "missed heartbeats before a host is unknown")
      ("order-resend-ms", po::value(&cfg.order_resend_ms)->default_value(cfg.order_resend_ms), "resend period of unacknowledged orders")
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
  if (!cfg.insecure_dev && !cfg.curve.enabled()) {
    std::cerr << "gantry-coordinator: no CURVE keys configured; refusing to start.\n"
                 "Configure keys, or pass --insecure-dev for a development setup on a trusted machine.\n";
    return 2;
  }
  if (cfg.insecure_dev) log->warn("INSECURE: running without CURVE; any process that reaches the sockets can act as an agent or operator");

  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  gantry::SystemClock clock;
  gantry::coordinator::Coordinator coord(cfg, clock);
  if (auto s = coord.start(); !s.ok()) {
    log->critical("cannot start: {}", s.error().message);
    return 1;
  }
  sd_notify(0, "READY=1");
  uint64_t wd_usec = 0;
  std::thread watchdog;
  std::atomic<bool> wd_stop{false};
  if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
    watchdog = std::thread([&] {
      while (!wd_stop) {
        sd_notify(0, "WATCHDOG=1");
        for (uint64_t waited = 0; waited < wd_usec / 2 && !wd_stop; waited += 50000) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  coord.run(g_stop);
  sd_notify(0, "STOPPING=1");
  wd_stop = true;
  if (watchdog.joinable()) watchdog.join();
  return 0;
}
