#include "coordinator/analysis/query_template.h"

#include <cctype>

namespace gantry::coordinator::analysis {
namespace {

constexpr size_t kMaxRendered = 64 * 1024;

// RE2 (Prometheus' regex engine) metacharacters quoted, as regexp.QuoteMeta does.
std::string quote_meta(const std::string& s) {
  static const std::string kMeta = "\\.+*?()|[]{}^$";
  std::string out;
  for (char c : s) {
    if (kMeta.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

std::string alternation(const std::vector<std::string>& names) {
  std::string re;
  for (const auto& n : names) {
    if (!instance_ok(n)) continue;  // the caller drops and logs these; never in a query
    if (!re.empty()) re += '|';
    re += quote_meta(n);
  }
  return promql_string(re);
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && s[a] == ' ') ++a;
  while (b > a && s[b - 1] == ' ') --b;
  return s.substr(a, b - a);
}

}  // namespace

bool instance_ok(const std::string& instance) {
  if (instance.empty() || instance.size() > 255) return false;
  for (unsigned char c : instance)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

std::string promql_string(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

Expected<std::string> render(const std::string& tmpl, const TemplateVars& v, Side side) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    const size_t open = tmpl.find("{{", i);
    if (open == std::string::npos) {
      out.append(tmpl, i, std::string::npos);
      break;
    }
    out.append(tmpl, i, open - i);
    const size_t close = tmpl.find("}}", open + 2);
    if (close == std::string::npos) return make_error("template", "\"{{\" without \"}}\" in the query");
    const std::string name = trim(tmpl.substr(open + 2, close - open - 2));
    const bool canary = side == Side::kCanary;
    if (name == "service")
      out += promql_string(v.service);
    else if (name == "new_version")
      out += promql_string(v.new_version);
    else if (name == "old_version")
      out += promql_string(v.old_version);
    else if (name == "version")
      out += promql_string(canary ? v.new_version : v.old_version);
    else if (name == "rollout_hosts")
      out += alternation(v.rollout_hosts);
    else if (name == "batch_hosts")
      out += alternation(v.batch_hosts);
    else if (name == "new_hosts")
      out += alternation(v.new_hosts);
    else if (name == "old_hosts")
      out += alternation(v.old_hosts);
    else if (name == "hosts")
      out += alternation(canary ? v.new_hosts : v.old_hosts);
    else {
      std::string shown = name.size() > 40 ? name.substr(0, 40) + "..." : name;
      for (char& c : shown)
        if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
      return make_error("template",
                        "unknown variable {{" + shown +
                            "}} (known: service, new_version, old_version, version, rollout_hosts, batch_hosts, "
                            "new_hosts, old_hosts, hosts)");
    }
    if (out.size() > kMaxRendered) return make_error("template", "the query is longer than 64 KiB once filled in");
    i = close + 2;
  }
  if (out.size() > kMaxRendered) return make_error("template", "the query is longer than 64 KiB once filled in");
  return out;
}

}  // namespace gantry::coordinator::analysis
