// gantry-agent: parse options, build the real implementations, wire, run.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "agent/config/agent_config.h"
#include "agent/core/agent.h"
#include "agent/driver/binary_driver.h"
#include "agent/net/session.h"
#include "agent/probe/probe.h"
#include "agent/state/state_store.h"
#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/util/process.h"
#include "common/version.h"

using namespace gantry;
using namespace gantry::agent;

int main(int argc, char** argv) {
  auto parsed = parse_args(argc, argv);
  if (!parsed) {
    std::cerr << "gantry-agent: " << parsed.error().message << "\n(see gantry-agent --help)\n";
    return 2;
  }
  if (parsed->help) {
    std::cout << parsed->text;
    return 0;
  }
  if (parsed->version) {
    std::cout << "gantry-agent " << kGantryVersion << "\n";
    return 0;
  }
  const AgentConfig& cfg = parsed->config;
  if (!cfg.insecure_dev) {
    std::cerr << "gantry-agent: refusing to start: CURVE security is not configured yet, and plaintext ZeroMQ\n"
                 "needs --insecure-dev (or insecure_dev = true) — for development only.\n";
    return 2;
  }
  log::setup("gantry-agent", cfg.log_level);
  auto lg = log::get("agent");
  lg->warn("INSECURE: --insecure-dev given; talking to the coordinator in plaintext without authentication");

  // Signals arrive through a signalfd the main loop polls; threads started later inherit the mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    lg->critical("signalfd failed");
    return 1;
  }

  if (Status st = fs::make_dirs(cfg.state_dir, 0700); !st.ok()) {
    lg->critical("cannot create state dir: {}", st.error().message);
    return 1;
  }

  SystemClock clock;
  RealProcessRunner runner;
  FileStateStore store(cfg.state_dir);
  std::map<std::string, ServiceRuntime> services;
  for (const auto& [name, sc] : cfg.services) {
    ServiceRuntime rt;
    rt.config = sc;
    rt.driver = std::make_shared<BinaryDriver>(sc, runner, clock);
    for (const auto& url : sc.http_probes) rt.probes.push_back(std::make_shared<HttpProbe>(url, sc.http_probe_expect));
    for (const auto& hp : sc.tcp_probes) rt.probes.push_back(std::make_shared<TcpProbe>(hp));
    if (Status st = fs::make_dirs(sc.root + "/releases"); !st.ok()) {
      lg->critical("service {}: {}", name, st.error().message);
      return 1;
    }
    services.emplace(name, std::move(rt));
  }

  Session* session = nullptr;
  Agent agent(
      cfg.host_id, cfg.labels, std::move(services), store, clock,
      [&session](const proto::Message& m) {
        if (session) session->send(m);
      },
      [](Millis ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
  if (Status st = agent.start(); !st.ok()) {
    lg->critical("start: {}", st.error().message);
    return 1;
  }

  SessionOptions so;
  so.host_id = cfg.host_id;
  so.coordinator = cfg.coordinator;
  so.coordinator_pub = cfg.coordinator_pub;
  so.heartbeat_interval_ms = cfg.heartbeat_interval_ms;
  so.socket.max_msg_size = 2 * 1024 * 1024;
  so.socket.send_hwm = 1000;
  so.socket.recv_hwm = 1000;
  so.socket.reconnect_ivl_ms = 100;
  so.socket.reconnect_ivl_max_ms = 5000;
  // so.socket.curve stays empty until the security issue wires keys in (the CURVE seam).
  zmq::context_t ctx(1);
  int rc = 0;
  {
    Session s(ctx, so, agent, clock);
    session = &s;
    lg->info("gantry-agent {} on {} with {} service(s)", kGantryVersion, cfg.host_id, cfg.services.size());
    rc = s.run(sfd);
    session = nullptr;
  }
  agent.shutdown();
  ::close(sfd);
  lg->info("stopped");
  return rc;
}
