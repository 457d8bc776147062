#include "common/util/shell_words.h"

namespace gantry {

Expected<std::vector<std::string>> split_shell_words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) out.push_back(std::move(cur));
      cur.clear();
      in_word = false;
    } else if (c == '\'') {
      auto end = s.find('\'', i + 1);
      if (end == std::string::npos) return make_error("syntax", "unterminated ' in: " + s);
      cur.append(s, i + 1, end - i - 1);
      i = end;
      in_word = true;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < s.size() && s[j] != '"'; ++j) {
        if (s[j] == '\\' && j + 1 < s.size() &&
            (s[j + 1] == '"' || s[j + 1] == '\\' || s[j + 1] == '$' || s[j + 1] == '`')) {
          ++j;
        }
        cur.push_back(s[j]);
      }
      if (j >= s.size()) return make_error("syntax", "unterminated \" in: " + s);
      i = j;
      in_word = true;
    } else if (c == '\\') {
      if (i + 1 >= s.size()) return make_error("syntax", "trailing backslash in: " + s);
      cur.push_back(s[++i]);
      in_word = true;
    } else {
      cur.push_back(c);
      in_word = true;
    }
  }
  if (in_word) out.push_back(std::move(cur));
  return out;
}

std::string shell_quote(const std::string& word) {
  if (word.empty()) return "''";
  bool safe = true;
  for (char c : word) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == '/' || c == ':' || c == '=' || c == '@' || c == ',' || c == '+' || c == '%';
    if (!ok) {
      safe = false;
      break;
    }
  }
  if (safe) return word;
  std::string q = "'";
  for (char c : word) {
    if (c == '\'')
      q += "'\\''";
    else
      q.push_back(c);
  }
  q += "'";
  return q;
}

std::string shell_join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out.push_back(' ');
    out += shell_quote(w);
  }
  return out;
}

}  // namespace gantry
