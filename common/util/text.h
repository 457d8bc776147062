// Text that came from outside (a peer, an operator, a probed service, an archive) made safe
// to store, log, put in JSON and print on a terminal. Applied once, where the text enters.
#pragma once

#include <string>
#include <string_view>

namespace gantry {

// True if `s` is well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
bool is_valid_utf8(std::string_view s);

// True if `s` is valid UTF-8 without control characters (C0, DEL, C1), i.e. what
// safe_text() leaves unchanged.
bool is_safe_text(std::string_view s);

// `s` as valid UTF-8 with every control character (C0 including newline and tab, DEL, C1) and
// every byte that is not part of a well-formed UTF-8 sequence written visibly as \xNN, and a
// backslash written as \\ whenever the text needed escaping, so an escaped text cannot pass for
// an unescaped one. At most `max_bytes` of output, "..." included (a longer text is cut on a
// character or escape boundary and "..." appended), so the result always fits a field of that size.
// Never throws. Text that is already safe comes back unchanged.
std::string safe_text(std::string_view s, std::size_t max_bytes = 64 * 1024);

}  // namespace gantry
