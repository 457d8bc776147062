#include "common/util/names.h"

namespace gantry {

bool is_safe_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  if (s == "." || s == "..") return false;
  if (s.front() == '-' || s.front() == '.') return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '+' || c == '@' || c == ':';
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

}  // namespace gantry
