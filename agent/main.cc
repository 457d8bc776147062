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
#include "agent/net/session.h"
#include "agent/state/state_store.h"
#include "common/security/keys.h"
#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/util/process.h"
#include "common/util/text.h"
#include "common/version.h"

using namespace gantry;
using namespace gantry::agent;

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "keygen") {
    return security::curve_keygen_main("gantry-agent", std::vector<std::string>(argv + 2, argv + argc));
  }
  if (argc >= 2 && std::string(argv[1]) == "state") {
    // The journal's current state (snapshot + the records after it) as JSON; reads only.
    auto args = parse_state_args(argc - 1, argv + 1);
    if (!args) {
      std::cerr << "gantry-agent state: " << args.error().message << "\n(see gantry-agent state --help)\n";
      return 2;
    }
    if (args->help) {
      std::cout << args->text;
      return 0;
    }
    FileStateStore store(args->state_dir);
    auto st = store.load();
    if (!st) {
      std::cerr << "gantry-agent: " << st.error().message << "\n";
      return 1;
    }
    std::cout << serialize_state(*st);
    return 0;
  }
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
  if (!cfg.insecure_dev && (cfg.agent_key.empty() || cfg.release_public_keys.empty())) {
    std::cerr << "gantry-agent: refusing to start without keys. Configure\n"
                 "  agent_key = FILE            (this agent's secret key: gantry-agent keygen --out FILE-PREFIX)\n"
                 "  coordinator_key = FILE      (the coordinator's public key, pinned)\n"
                 "  release_public_key = FILE   (who may sign releases: gantry release keygen)\n"
                 "or pass --insecure-dev (insecure_dev = true) for development only.\n";
    return 2;
  }
  transport::CurveOptions curve;
  if (!cfg.agent_key.empty()) {
    auto kp = security::read_curve_secret(cfg.agent_key);
    if (!kp) {
      std::cerr << "gantry-agent: agent_key: " << safe_text(kp.error().message) << "\n";
      return 2;
    }
    auto server = security::read_curve_public(cfg.coordinator_key);
    if (!server) {
      std::cerr << "gantry-agent: coordinator_key: " << safe_text(server.error().message) << "\n";
      return 2;
    }
    curve.public_key = kp->public_z85;
    curve.secret_key = kp->secret_z85;
    curve.server_public_key = *server;
  }
  std::vector<std::string> release_keys;
  for (const auto& f : cfg.release_public_keys) {
    auto k = security::read_signing_public(f);
    if (!k) {
      std::cerr << "gantry-agent: release_public_key: " << safe_text(k.error().message) << "\n";
      return 2;
    }
    release_keys.push_back(*k);
  }
  log::setup("gantry-agent", cfg.log_level);
  auto lg = log::get("agent");
  if (!curve.enabled())
    lg->warn("INSECURE: --insecure-dev given; talking to the coordinator in plaintext without authentication");
  else
    lg->info("CURVE on: agent key {}, coordinator key pinned to {}", curve.public_key, curve.server_public_key);
  if (release_keys.empty())
    lg->warn("INSECURE: no release_public_key; unsigned releases will be installed");
  else
    lg->info("{} trusted release key(s); only releases they signed install", release_keys.size());

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
    auto rt = make_service_runtime(sc, runner, clock,
                                   [](Millis ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
    if (!rt) {
      lg->critical("service {}: {}", name, rt.error().message);
      return 1;
    }
    if (Status st = fs::make_dirs(sc.root + "/releases"); !st.ok()) {
      lg->critical("service {}: {}", name, st.error().message);
      return 1;
    }
    services.emplace(name, std::move(*rt));
  }

  Session* session = nullptr;
  Agent agent(
      cfg.host_id, cfg.labels, std::move(services), store, clock,
      [&session](const proto::Message& m) {
        if (session) session->send(m);
      },
      [](Millis ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
  agent.set_release_keys(release_keys);
  if (Status st = agent.start(); !st.ok()) {
    lg->critical("start: {}", st.error().message);
    return 1;
  }

  SessionOptions so;
  so.host_id = cfg.host_id;
  so.coordinators = cfg.coordinators;
  so.coordinator_pubs = cfg.coordinator_pubs;
  so.heartbeat_interval_ms = cfg.heartbeat_interval_ms;
  so.udp_heartbeats = cfg.udp_heartbeats;
  so.socket.max_msg_size = 2 * 1024 * 1024;
  so.socket.send_hwm = 1000;
  so.socket.recv_hwm = 1000;
  so.socket.reconnect_ivl_ms = 100;
  so.socket.reconnect_ivl_max_ms = 5000;
  so.socket.curve = curve;
  zmq::context_t ctx(1);
  transport::configure_context(ctx);
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
