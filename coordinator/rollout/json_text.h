// JSON text written straight into a string, for records written once per host on hot paths
// (host slots, orders): building an nlohmann::json tree only to dump it and free it cost more
// than the SQLite row it went into. The output is byte for byte what nlohmann::json::dump()
// gives for the same object (keys in sorted order, no spaces), so stored rows read back the
// same way whichever wrote them; tests check the two against each other.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace gantry::rollout::json_text {

// A JSON string literal (quotes included), escaped as nlohmann::json::dump() does. Text that is
// not plain ASCII goes through nlohmann itself, so invalid UTF-8 is refused the same way (a
// nlohmann::json::type_error).
inline void append_string(std::string& out, std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) {
      out += nlohmann::json(std::string(s)).dump();
      return;
    }
  }
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          static const char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// Members are written in the order given: callers list them sorted by key, as nlohmann's
// std::map-backed objects are.
class Object {
 public:
  explicit Object(std::string& out) : out_(out) { out_ += '{'; }
  Object& str(std::string_view key, std::string_view v) {
    this->key(key);
    append_string(out_, v);
    return *this;
  }
  Object& num(std::string_view key, int64_t v) {
    this->key(key);
    out_ += std::to_string(v);
    return *this;
  }
  Object& unum(std::string_view key, uint64_t v) {
    this->key(key);
    out_ += std::to_string(v);
    return *this;
  }
  Object& boolean(std::string_view key, bool v) {
    this->key(key);
    out_ += v ? "true" : "false";
    return *this;
  }
  void close() { out_ += '}'; }

 private:
  void key(std::string_view k) {
    if (!first_) out_ += ',';
    first_ = false;
    out_ += '"';
    out_ += k;  // keys are identifiers: nothing to escape
    out_ += "\":";
  }
  std::string& out_;
  bool first_ = true;
};

}  // namespace gantry::rollout::json_text
