// A service's traffic-step settings (agent/traffic/lifecycle.h) and the agent config keys that
// set them, in a [service.NAME] section (README "Rolling without downtime").
#pragma once

#include <string>

#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::agent::traffic {

// A lifecycle command: `/bin/sh -c command`, killed at timeout_ms. Empty: the step has no command.
struct StepCommand {
  std::string command;
  Millis timeout_ms = 30000;
};

// The built-in HAProxy steps for one service (runtime API socket and backend/server).
struct HaproxySettings {
  std::string socket;               // "/run/haproxy/admin.sock" or "127.0.0.1:9999"; empty: no HAProxy
  std::string backend;              // the backend ...
  std::string server;               // ... and server this host's instance is
  Millis drain_timeout_ms = 30000;  // wait at most this long for its sessions to reach 0
  Millis up_timeout_ms = 30000;     // wait at most this long for HAProxy to report it UP
  Millis poll_ms = 100;             // how often HAProxy is asked while waiting
};

// One service's lifecycle settings (the agent's config fills them; all optional).
struct LifecycleSettings {
  StepCommand block_traffic;         // takes the host out of the load balancer
  StepCommand wait_inflight;         // returns once in-flight work is done (after HAProxy's sessions reach 0)
  Millis drain_delay_ms = 0;         // a fixed wait after blocking, for balancers that report no session count
  StepCommand allow_traffic;         // puts the host back (after verification only)
  StepCommand post_allow;            // a check once traffic is allowed (e.g. a request through the balancer)
  Millis post_allow_healthy_ms = 0;  // the probes must keep passing this long after allowing
  HaproxySettings haproxy;
  // True when any traffic step is configured; otherwise the engine behaves as without lifecycle.
  bool any() const;
};

// True for a [service.NAME] key of the traffic steps (block_traffic_command, haproxy_socket, ...).
bool is_setting_key(const std::string& key);
// Sets one key from its config value; an invalid value is an error naming what is accepted.
Status apply_setting(LifecycleSettings& s, const std::string& key, const std::string& value);
// Checks across keys once the section is read (an HAProxy socket needs its backend/server).
Status check_settings(const LifecycleSettings& s);

}  // namespace gantry::agent::traffic
