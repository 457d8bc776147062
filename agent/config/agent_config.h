// The agent's configuration: command line first, then an INI file (--config FILE), both read
// by Boost.Program_options and checked here, so main() only wires what comes out.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agent/driver/slots.h"
#include "agent/traffic/settings.h"
#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::agent {

struct ServiceConfig {
  std::string name;
  std::string driver = "binary";
  std::string root;  // absolute install root
  std::string restart_command;
  Millis restart_timeout_ms = 30000;
  std::vector<std::string> http_probes;
  std::string http_probe_expect;
  std::vector<std::string> tcp_probes;
  Millis probe_interval_ms = 250;
  Millis min_healthy_ms = 2000;
  Millis healthy_deadline_ms = 30000;
  uint32_t retain = 3;
  // driver = container (see docs/CONTAINERS.md)
  std::string runtime = "podman";          // runtime CLI: podman or docker (same grammar)
  std::vector<std::string> runtime_args;   // global flags before the subcommand (--runtime runc)
  std::string container_name;              // default: the service name
  std::vector<std::string> run_args;       // `run` flags: ports, volumes, env, ulimits
  std::vector<std::string> command;        // arguments after the image (default: the image's CMD)
  std::string start_order = "stop-first";  // or start-first (containers; binaries with slots)
  Millis stop_timeout_ms = 10000;          // grace period of `stop` before SIGKILL; stop_command's timeout
  // driver = binary, start_order = start-first (agent/driver/slots.h): two slots, the commands
  // that start and stop one slot's instance. Probes and haproxy_server may name {slot}/{port}.
  std::vector<Slot> slots;
  std::string start_command;
  Millis start_timeout_ms = 30000;
  std::string stop_command;
  Millis runtime_timeout_ms = 600000;  // bound on load / pull / run
  // Traffic steps around every swap (README "Rolling without downtime"; agent/traffic/settings.h).
  traffic::LifecycleSettings traffic;
};

struct AgentConfig {
  std::string host_id;
  // As given: one endpoint, or a comma-separated list (a leader and its standbys; PROTOCOL.md
  // §5.8). Flag, env GANTRY_AGENT_COORDINATOR / GANTRY_AGENT_COORDINATOR_PUB (not the CLI's GANTRY_COORDINATOR, which
  // names the operator endpoint), or config file, in that order.
  std::string coordinator = "tcp://127.0.0.1:7600";
  std::string coordinator_pub = "tcp://127.0.0.1:7601";
  // The same split and checked (tcp://HOST:PORT each, same length: pair i is one coordinator).
  std::vector<std::string> coordinators;
  std::vector<std::string> coordinator_pubs;
  std::string state_dir = "/var/lib/gantry-agent";
  std::map<std::string, std::string> labels;
  bool insecure_dev = false;
  std::string agent_key;                         // CURVE secret key file of this agent
  std::string coordinator_key;                   // CURVE public key file of the coordinator (pinned)
  std::vector<std::string> release_public_keys;  // ed25519 release public key files
  std::string log_level = "info";
  Millis heartbeat_interval_ms = 1000;
  // Heartbeat by UDP datagram when the coordinator's Welcome offers a session (PROTOCOL.md §5.7).
  bool udp_heartbeats = true;
  std::map<std::string, ServiceConfig> services;
};

struct ParsedArgs {
  bool help = false;     // --help was given; `text` holds the usage
  bool version = false;  // --version was given
  std::string text;
  AgentConfig config;
};

// Parses argv and the config file it names, and checks every value. Errors carry a message fit
// for stderr, naming the option and its value with control characters escaped (the caller
// exits 2). Does not check --insecure-dev; the caller decides.
Expected<ParsedArgs> parse_args(int argc, const char* const* argv);

// `gantry-agent state --state-dir DIR`: argv after the word "state".
struct StateArgs {
  bool help = false;  // --help was given; `text` holds the usage
  std::string text;
  std::string state_dir;
};
Expected<StateArgs> parse_state_args(int argc, const char* const* argv);

}  // namespace gantry::agent
