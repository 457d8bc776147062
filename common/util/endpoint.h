// Validation of the endpoints Gantry processes connect to or are told about: the agent's and
// the CLI's configured coordinator endpoints, and the leader's endpoints a standby names on the
// wire (hostile input: checked where it enters, in the codec).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/expected.h"

namespace gantry {

// Longest endpoint accepted anywhere (a DNS name is at most 253 characters).
constexpr std::size_t kMaxEndpointLength = 300;

// HOST of an endpoint: a DNS name or IPv4 address ([A-Za-z0-9._-], not starting with '-' or '.'),
// or a bracketed IPv6 address, optionally with a %zone ([fe80::1%eth0]).
bool is_endpoint_host(std::string_view host);

// tcp://HOST:PORT, PORT 1-65535, at most kMaxEndpointLength characters. The error (code
// "config") names the value and says what is wrong.
Status check_tcp_endpoint(std::string_view endpoint);
// http://HOST:PORT, the same HOST and PORT rules.
Status check_http_endpoint(std::string_view endpoint);
// HOST:PORT, the same HOST and PORT rules.
Status check_host_port(std::string_view host_port);

// A list of endpoints as configured: "a,b, c" -> {"a", "b", "c"} (split at commas, spaces
// around each item dropped). An empty item stays "" (and fails the endpoint check, named).
std::vector<std::string> split_endpoint_list(std::string_view list);

}  // namespace gantry
