// A client of HAProxy's runtime API (its "stats socket") for one backend/server: drain it, make
// it ready, read its state. One command per connection (HAProxy's non-interactive mode). Every
// answer is hostile input: read at most kMaxAnswerBytes, parsed and validated, never thrown on.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "agent/traffic/load_balancer.h"
#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::agent::traffic {

// Where the runtime API listens: a unix socket path, or a TCP IPv4 address.
struct HaproxyEndpoint {
  std::string unix_path;  // set for "unix@/path" or "/path"
  std::string host;       // set for "127.0.0.1:9999" or "ipv4@127.0.0.1:9999"
  uint16_t port = 0;
};

// "/run/haproxy/admin.sock", "unix@/run/haproxy/admin.sock", "127.0.0.1:9999" or
// "ipv4@127.0.0.1:9999" (numeric IPv4 only: the agent names no host to resolve).
Expected<HaproxyEndpoint> parse_haproxy_endpoint(const std::string& s);

// True for a proxy or server name HAProxy accepts that cannot smuggle a second command into the
// line: letters, digits, '-', '_', '.', ':', 1 to 64 characters.
bool is_haproxy_name(std::string_view s);

// The `backend/server` row of a `show stat` answer (CSV with a "# pxname,svname,..." header).
// Columns are found by the header's names, so a newer HAProxy adding columns still parses.
Expected<ServerStat> parse_show_stat(std::string_view csv, std::string_view backend, std::string_view server);

class HaproxyRuntime final : public LoadBalancer {
 public:
  // Answers beyond this many bytes are refused (a `show stat` of one backend is a few KiB).
  static constexpr size_t kMaxAnswerBytes = 1 << 20;

  HaproxyRuntime(HaproxyEndpoint endpoint, std::string backend, std::string server, Millis io_timeout_ms = 2000);

  std::string describe() const override;
  // `set server B/S state drain`
  Status drain() override;
  // `set server B/S state ready`
  Status ready() override;
  // `show stat B 4 -1`, this server's row.
  Expected<ServerStat> stat() override;

  // Sends one command line and returns HAProxy's whole answer (until it closes).
  Expected<std::string> command(const std::string& line);

 private:
  Status set_state(const char* state);

  HaproxyEndpoint endpoint_;
  std::string backend_, server_;
  Millis io_timeout_ms_;
};

}  // namespace gantry::agent::traffic
