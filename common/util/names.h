// Validation of names that end up in paths or logs (CVE-2020-11652 taught why).
#pragma once

#include <optional>
#include <string_view>

namespace gantry {

// A host id, service name or version: 1..128 chars of [A-Za-z0-9._-+@:], not "." or "..",
// not starting with '-' or '.'. Safe as one path component and as a log token.
bool is_safe_name(std::string_view s);

// 64 lowercase hex digits.
bool is_sha256_hex(std::string_view s);

// A TCP port written as 1..5 decimal digits, 0..65535; nullopt otherwise ("99999", "+1", "", "8o").
// Callers that need a real port check for 0 themselves (0 means "any free port" to bind).
std::optional<int> parse_port(std::string_view s);

// A label key or value: 0..128 printable ASCII chars without '=' ',' or whitespace (values may be empty).
bool is_label_token(std::string_view s, bool allow_empty);

}  // namespace gantry
