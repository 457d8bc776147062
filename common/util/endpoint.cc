#include "common/util/endpoint.h"

#include <string>

#include "common/util/names.h"
#include "common/util/text.h"

namespace gantry {
namespace {

constexpr std::string_view kHostChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";

// HOST:PORT after the scheme; `want` names the expected form in the error.
Status check_rest(std::string_view whole, std::string_view rest, std::string_view want) {
  auto bad = [&](const std::string& why) {
    return make_error("config", "endpoint '" + safe_text(whole, kMaxEndpointLength) + "' " + why + " (want " +
                                    std::string(want) + ")");
  };
  if (whole.size() > kMaxEndpointLength) return bad("is too long");
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos) return bad("has no port");
  const std::string_view host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (parse_port(port).value_or(0) == 0) return bad("has no port between 1 and 65535");
  if (host.empty()) return bad("has no host");
  if (!is_endpoint_host(host))
    return bad(host.front() == '[' ? "has a malformed IPv6 address" : "has a malformed host name");
  return Status::Ok();
}

Status check_scheme(std::string_view ep, std::string_view scheme, std::string_view want) {
  if (ep.substr(0, scheme.size()) != scheme)
    return make_error("config", "endpoint '" + safe_text(ep, kMaxEndpointLength) + "' is not " + std::string(scheme) +
                                    " (want " + std::string(want) + ")");
  return check_rest(ep, ep.substr(scheme.size()), want);
}

}  // namespace

bool is_endpoint_host(std::string_view host) {
  if (host.empty()) return false;
  if (host.front() == '[') {
    // [address] or [address%zone] (a link-local address with its interface)
    if (host.size() < 3 || host.back() != ']') return false;
    const std::string_view inner = host.substr(1, host.size() - 2);
    const auto pct = inner.find('%');
    const std::string_view addr = inner.substr(0, pct);
    const std::string_view zone = pct == std::string_view::npos ? std::string_view() : inner.substr(pct + 1);
    if (addr.empty() || addr.find(':') == std::string_view::npos ||
        addr.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos)
      return false;
    return pct == std::string_view::npos ||
           (!zone.empty() && zone.find_first_not_of(kHostChars) == std::string_view::npos);
  }
  return host.find_first_not_of(kHostChars) == std::string_view::npos && host.front() != '-' && host.front() != '.';
}

Status check_tcp_endpoint(std::string_view endpoint) { return check_scheme(endpoint, "tcp://", "tcp://HOST:PORT"); }

Status check_http_endpoint(std::string_view endpoint) { return check_scheme(endpoint, "http://", "http://HOST:PORT"); }

std::vector<std::string> split_endpoint_list(std::string_view list) {
  std::vector<std::string> out;
  for (;;) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    const size_t b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
    out.emplace_back(b == std::string_view::npos ? std::string_view() : item.substr(b, e - b + 1));
    if (comma == std::string_view::npos) return out;
    list.remove_prefix(comma + 1);
  }
}

Status check_host_port(std::string_view host_port) { return check_rest(host_port, host_port, "HOST:PORT"); }

}  // namespace gantry
