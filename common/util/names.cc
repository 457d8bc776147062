#include "common/util/names.h"

namespace gantry {

bool is_safe_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  if (s == "." || s == "..") return false;
  if (s.front() == '-' || s.front() == '.') return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || c == '+' || c == '@' || c == ':';
    if (!ok) return false;
  }
  return true;
}

bool is_sha256_hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool is_label_token(std::string_view s, bool allow_empty) {
  if (s.empty()) return allow_empty;
  if (s.size() > 128) return false;
  for (char c : s) {
    if (c <= ' ' || c > '~' || c == '=' || c == ',') return false;
  }
  return true;
}

std::optional<int> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  int port = 0;
  for (char c : s) port = port * 10 + (c - '0');
  if (port > 65535) return std::nullopt;
  return port;
}

}  // namespace gantry
