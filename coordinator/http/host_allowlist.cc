#include "coordinator/http/host_allowlist.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "common/util/names.h"

namespace gantry::coordinator {

namespace {

std::string lower_without_trailing_dot(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_ipv4(const std::string& s) {
  in_addr a{};
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool is_ipv6(const std::string& s) {
  in6_addr a{};
  return inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

}  // namespace

bool is_dns_name(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  if (s.empty() || s.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '.') {
      if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-') return false;
      label = 0;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (!std::isalnum(c) && c != '-') return false;
    ++label;
  }
  return true;
}

Expected<HostAllowlist> HostAllowlist::make(const std::vector<std::string>& names) {
  HostAllowlist out;
  for (const auto& n : names) {
    if (!is_dns_name(n)) {
      return make_error("config",
                        "allowed HTTP host '" + n + "' is not a DNS name (letters, digits, '-' and '.'; no port)");
    }
    out.names_.push_back(lower_without_trailing_dot(n));
  }
  return out;
}

bool HostAllowlist::allows(std::string_view h) const {
  std::string_view name = h;
  if (!h.empty() && h.front() == '[') {  // [IPv6] or [IPv6]:port
    const auto close = h.find(']');
    if (close == std::string_view::npos) return false;
    const std::string_view rest = h.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !parse_port(rest.substr(1)))) return false;
    return is_ipv6(std::string(h.substr(1, close - 1)));
  }
  if (const auto colon = h.rfind(':'); colon != std::string_view::npos) {
    if (!parse_port(h.substr(colon + 1))) return false;
    name = h.substr(0, colon);
  }
  const std::string n = lower_without_trailing_dot(name);
  if (is_ipv4(n)) return true;
  if (!is_dns_name(n)) return false;
  return n == "localhost" || std::find(names_.begin(), names_.end(), n) != names_.end();
}

}  // namespace gantry::coordinator
