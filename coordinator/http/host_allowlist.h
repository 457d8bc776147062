// Which Host headers the HTTP endpoint answers: the defence against DNS rebinding, where a web
// page on an attacker's domain re-points that domain at the coordinator and reads /status
// through the victim's browser. Such a request always carries the attacker's DNS name in Host,
// so the endpoint answers only names it was given, plus `localhost` and IP literals (a browser
// sends an IP literal only to a page whose origin is that very address, never cross-origin).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/util/expected.h"

namespace gantry::coordinator {

class HostAllowlist {
 public:
  // `names`: extra DNS names (case-insensitive, without port). An invalid one is an error.
  static Expected<HostAllowlist> make(const std::vector<std::string>& names);

  // True if a Host header value (name, IPv4, or [IPv6], each with an optional :port) is allowed.
  bool allows(std::string_view host_header) const;

 private:
  std::vector<std::string> names_;  // lowercase, without a trailing dot
};

// A DNS name: dot-separated labels of letters, digits and '-', each 1..63 long, 253 in all;
// a trailing dot is accepted.
bool is_dns_name(std::string_view s);

}  // namespace gantry::coordinator
