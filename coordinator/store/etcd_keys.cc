#include "coordinator/store/etcd_keys.h"

#include <cstdio>

namespace gantry::store::etcd_keys {

std::string escape(const std::string& name) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(name.size());
  for (unsigned char c : name) {
    const bool keep =
        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (keep) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xf]);
    }
  }
  return out;
}

std::string id20(uint64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020llu", static_cast<unsigned long long>(id));
  return buf;
}

std::string pos10(uint32_t pos) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%010u", pos);
  return buf;
}

}  // namespace gantry::store::etcd_keys
