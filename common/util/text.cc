#include "common/util/text.h"

#include <cstdint>

namespace gantry {
namespace {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if none does.
std::size_t utf8_seq_len(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) return 1;
  std::size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else
    return 0;  // continuation byte, overlong lead (C0, C1) or past U+10FFFF (F5..FF)
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF) return 0;  // overlong / too big
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;                                         // surrogate
  return n;
}

// A control character as UTF-8: C0 (< 0x20), DEL, or C1 (U+0080..U+009F, encoded C2 80..C2 9F).
bool is_control(std::string_view s, std::size_t i, std::size_t n) {
  const auto c = static_cast<uint8_t>(s[i]);
  if (n == 1) return c < 0x20 || c == 0x7F;
  return n == 2 && c == 0xC2 && static_cast<uint8_t>(s[i + 1]) < 0xA0;
}

void append_hex(std::string& out, uint8_t c) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 0xF];
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_seq_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool is_safe_text(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_seq_len(s, i);
    if (n == 0 || is_control(s, i, n)) return false;
    i += n;
  }
  return true;
}

std::string safe_text(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes && is_safe_text(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() < max_bytes ? s.size() + 16 : max_bytes);
  // The output length at the last piece boundary that leaves room for "...": a cut text ends
  // there, so it is never longer than max_bytes and never ends inside an escape.
  std::size_t fits = 0;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_seq_len(s, i);
    if (out.size() + 3 <= max_bytes) fits = out.size();
    if (n == 0) {
      append_hex(out, static_cast<uint8_t>(s[i]));
    } else if (is_control(s, i, n)) {
      for (std::size_t k = 0; k < n; ++k) append_hex(out, static_cast<uint8_t>(s[i + k]));
    } else if (n == 1 && s[i] == '\\') {
      out += "\\\\";
    } else {
      out.append(s.data() + i, n);
    }
    if (out.size() > max_bytes) {
      if (max_bytes < 3) {
        out.resize(max_bytes < fits ? max_bytes : fits);
        return out;
      }
      out.resize(fits);
      out += "...";
      return out;
    }
    i += n == 0 ? 1 : n;
  }
  return out;
}

}  // namespace gantry
