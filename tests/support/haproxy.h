// A real HAProxy (Debian's /usr/sbin/haproxy) for end-to-end tests and the demo: started in the
// foreground (-db) on loopback ports with its runtime API on a unix socket in a temp dir, never
// as a system service; killed and reaped by the destructor.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tests/support/fleet.h"

namespace gantry::testing {

// The HAProxy binary, or "" when it is not installed.
std::string haproxy_binary();

struct HaproxyOptions {
  int check_inter_ms = 500;  // health checks: every 500 ms, fall 2, rise 2 (issue 19's setup)
  int fall = 2;
  int rise = 2;
  int retries = 0;  // no retry hides a failed request from the client
  std::string health_path = "/health";
  // The servers' names, one per port; empty: web1..webN (server(i)).
  std::vector<std::string> server_names;
};

// One frontend on 127.0.0.1, one backend "demo" with servers web1..webN at the given ports.
class Haproxy {
 public:
  // Writes <dir>/haproxy.cfg and starts HAProxy; waits (bounded) until its runtime socket
  // answers. Throws std::runtime_error (with its log) when it does not come up.
  Haproxy(const std::string& dir, const std::vector<int>& server_ports, HaproxyOptions options = {});
  ~Haproxy();
  Haproxy(const Haproxy&) = delete;
  Haproxy& operator=(const Haproxy&) = delete;

  int port() const { return port_; }                     // the frontend's port
  const std::string& socket() const { return socket_; }  // runtime API (unix socket path)
  static std::string backend() { return "demo"; }
  static std::string server(int i) { return "web" + std::to_string(i + 1); }  // server of port i
  // One runtime API command's answer; nullopt when the socket does not answer.
  std::optional<std::string> command(const std::string& line) const;
  // The `status` column of server i ("UP", "DOWN", "DRAIN", ...), or "" when unreadable.
  std::string status(int i) const;
  // The same for the server named `name`.
  std::string status_of(const std::string& name) const;
  // Waits until every server is UP (bounded); false at the timeout.
  bool wait_all_up(int timeout_ms) const;
  std::string log() const;

 private:
  std::string dir_, socket_;
  int port_ = 0;
  size_t servers_ = 0;
  std::vector<std::string> names_;
  Process process_;
};

}  // namespace gantry::testing
