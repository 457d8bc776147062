#include "coordinator/ha/member_info.h"

#include <nlohmann/json.hpp>

#include "common/util/names.h"

namespace gantry::coordinator::ha {

namespace {

constexpr size_t kMaxEndpoint = 300;

bool host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == '_' || c == ':' || c == '[' || c == ']';
}

// SCHEME HOST:PORT with a decimal port and host characters only (IPv6 in brackets).
bool valid_endpoint(const std::string& v, const std::string& scheme) {
  if (v.size() > kMaxEndpoint || v.rfind(scheme, 0) != 0) return false;
  const std::string hp = v.substr(scheme.size());
  const auto colon = hp.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hp.size()) return false;
  for (size_t i = 0; i < colon; ++i)
    if (!host_char(hp[i])) return false;
  const std::string port = hp.substr(colon + 1);
  if (port.size() > 5) return false;
  for (char c : port)
    if (c < '0' || c > '9') return false;
  return std::stoi(port) <= 65535;
}

}  // namespace

std::string MemberInfo::to_json() const {
  return nlohmann::json{{"name", name}, {"agent", agent},
                        {"pub", pub},   {"operator", operator_ep},
                        {"http", http}, {"udp_heartbeat", udp_heartbeat}}
      .dump();
}

Expected<MemberInfo> MemberInfo::from_json(const std::string& text) {
  if (text.size() > 4096) return make_error("member", "member record is longer than 4096 bytes");
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return make_error("member", "member record is not a JSON object");
  MemberInfo m;
  const auto field = [&](const char* key, std::string& out) -> bool {
    auto it = j.find(key);
    if (it == j.end()) return true;
    if (!it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  if (!field("name", m.name) || !field("agent", m.agent) || !field("pub", m.pub) || !field("operator", m.operator_ep) ||
      !field("http", m.http) || !field("udp_heartbeat", m.udp_heartbeat))
    return make_error("member", "member record has a field that is not a string");
  if (!is_safe_name(m.name)) return make_error("member", "member record has no valid name");
  if (!valid_endpoint(m.agent, "tcp://") || !valid_endpoint(m.pub, "tcp://") ||
      !valid_endpoint(m.operator_ep, "tcp://"))
    return make_error("member", "member record of " + m.name + " has a malformed tcp:// endpoint");
  if (!m.http.empty() && !valid_endpoint(m.http, "http://"))
    return make_error("member", "member record of " + m.name + " has a malformed http endpoint");
  if (!m.udp_heartbeat.empty() && !valid_endpoint(m.udp_heartbeat, ""))
    return make_error("member", "member record of " + m.name + " has a malformed udp_heartbeat endpoint");
  return m;
}

std::map<std::string, std::string> MemberInfo::endpoints() const {
  std::map<std::string, std::string> out{{"name", name}, {"agent", agent}, {"pub", pub}, {"operator", operator_ep}};
  if (!http.empty()) out["http"] = http;
  if (!udp_heartbeat.empty()) out["udp_heartbeat"] = udp_heartbeat;
  return out;
}

std::string advertised(const std::string& bound, const std::string& advertise_host) {
  const auto scheme_end = bound.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : bound.substr(0, scheme_end + 3);
  const std::string hp = bound.substr(scheme.size());
  const auto colon = hp.rfind(':');
  if (colon == std::string::npos) return bound;
  std::string host = hp.substr(0, colon);
  if (!advertise_host.empty())
    host = advertise_host.find(':') != std::string::npos && advertise_host.front() != '[' ? "[" + advertise_host + "]"
                                                                                          : advertise_host;
  else if (host == "0.0.0.0" || host == "*" || host == "[::]" || host == "::")
    host = "127.0.0.1";
  return scheme + host + hp.substr(colon);
}

}  // namespace gantry::coordinator::ha
