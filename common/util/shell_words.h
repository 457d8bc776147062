// Shell-like word splitting and quoting, without any expansion: for config values that hold
// several command-line arguments (`run_args = -p 8080:80 -e "A=b c"`) and for building
// /bin/sh command lines from argument vectors.
#pragma once

#include <string>
#include <vector>

#include "common/util/expected.h"

namespace gantry {

// Splits `s` into words like a POSIX shell without expansions: blanks separate words, '...'
// quotes literally, "..." quotes with \" \\ \$ \` escapes, a backslash outside quotes escapes the
// next character. Unterminated quotes and a trailing backslash are errors.
Expected<std::vector<std::string>> split_shell_words(const std::string& s);

// Quotes one word for /bin/sh (bare when it only holds safe characters, else single-quoted).
std::string shell_quote(const std::string& word);

// shell_quote of each word, joined by single spaces.
std::string shell_join(const std::vector<std::string>& words);

}  // namespace gantry
