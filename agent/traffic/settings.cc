#include "agent/traffic/settings.h"

#include <charconv>

#include "agent/traffic/haproxy_runtime.h"

namespace gantry::agent::traffic {
namespace {

constexpr Millis kMaxMs = 24LL * 3600 * 1000;

Expected<Millis> parse_ms(const std::string& v, Millis min) {
  Millis n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < min || n > kMaxMs)
    return make_error("config", "must be an integer between " + std::to_string(min) + " and " + std::to_string(kMaxMs) +
                                    ", got '" + v + "'");
  return n;
}

// The command and timeout keys of the four step commands.
StepCommand* command_of(LifecycleSettings& s, const std::string& key, bool& is_timeout) {
  struct Entry {
    const char* name;
    StepCommand LifecycleSettings::*member;
  };
  static const Entry entries[] = {{"block_traffic", &LifecycleSettings::block_traffic},
                                  {"wait_inflight", &LifecycleSettings::wait_inflight},
                                  {"allow_traffic", &LifecycleSettings::allow_traffic},
                                  {"post_allow", &LifecycleSettings::post_allow}};
  for (const auto& e : entries) {
    std::string base = e.name;
    if (key == base + "_command" || key == base + "_timeout_ms") {
      is_timeout = key == base + "_timeout_ms";
      return &(s.*e.member);
    }
  }
  return nullptr;
}

}  // namespace

bool is_setting_key(const std::string& key) {
  LifecycleSettings s;
  bool t = false;
  return command_of(s, key, t) != nullptr || key == "drain_delay_ms" || key == "post_allow_healthy_ms" ||
         key == "haproxy_socket" || key == "haproxy_server" || key == "haproxy_drain_timeout_ms" ||
         key == "haproxy_up_timeout_ms";
}

Status apply_setting(LifecycleSettings& s, const std::string& key, const std::string& v) {
  bool is_timeout = false;
  if (StepCommand* c = command_of(s, key, is_timeout)) {
    if (!is_timeout) {
      c->command = v;
      return Status::Ok();
    }
    auto n = parse_ms(v, 1);
    if (!n) return n.error();
    c->timeout_ms = *n;
  } else if (key == "drain_delay_ms" || key == "post_allow_healthy_ms" || key == "haproxy_drain_timeout_ms" ||
             key == "haproxy_up_timeout_ms") {
    auto n = parse_ms(v, key == "haproxy_up_timeout_ms" ? 1 : 0);
    if (!n) return n.error();
    if (key == "drain_delay_ms")
      s.drain_delay_ms = *n;
    else if (key == "post_allow_healthy_ms")
      s.post_allow_healthy_ms = *n;
    else if (key == "haproxy_drain_timeout_ms")
      s.haproxy.drain_timeout_ms = *n;
    else
      s.haproxy.up_timeout_ms = *n;
  } else if (key == "haproxy_socket") {
    if (auto e = parse_haproxy_endpoint(v); !e) return e.error();
    s.haproxy.socket = v;
  } else if (key == "haproxy_server") {
    auto slash = v.find('/');
    std::string b = slash == std::string::npos ? "" : v.substr(0, slash),
                sv = slash == std::string::npos ? "" : v.substr(slash + 1);
    if (!is_haproxy_name(b) || !is_haproxy_name(sv))
      return make_error("config",
                        "must be BACKEND/SERVER, names of letters, digits, '-', '_', '.', ':' (got '" + v + "')");
    s.haproxy.backend = b;
    s.haproxy.server = sv;
  } else {
    return make_error("config", "not a traffic-step key");
  }
  return Status::Ok();
}

Status check_settings(const LifecycleSettings& s) {
  if (s.haproxy.socket.empty() != s.haproxy.server.empty())
    return make_error("config", "haproxy_socket and haproxy_server go together");
  return Status::Ok();
}

}  // namespace gantry::agent::traffic
