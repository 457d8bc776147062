#include "cli/table.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace gantry::cli {

namespace {
// Columns on screen: UTF-8 continuation bytes take none (cells hold "—", "…", "→").
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
}  // namespace

void Table::print(std::ostream& out) const {
  std::vector<size_t> w(headers_.size(), 0);
  for (size_t i = 0; i < headers_.size(); ++i) w[i] = width(headers_[i]);
  for (const auto& r : rows_) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], width(r[i]));
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < w.size(); ++i) {
      std::string c = i < cells.size() ? cells[i] : "";
      s += c;
      if (i + 1 < w.size()) s += std::string(w[i] - width(c) + 2, ' ');
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out << s << '\n';
  };
  line(headers_);
  for (const auto& r : rows_) line(r);
}

std::string ago(long long ms) {
  if (ms < 0) return "-";
  if (ms < 1000) return "now";
  long long s = ms / 1000;
  if (s < 120) return std::to_string(s) + "s ago";
  if (s < 7200) return std::to_string(s / 60) + "m ago";
  if (s < 172800) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

std::string when(long long wall_ms) {
  if (wall_ms <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(wall_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string time_of_day_ms(long long wall_ms) {
  if (wall_ms <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(wall_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03lld", tm.tm_hour, tm.tm_min, tm.tm_sec, wall_ms % 1000);
  return buf;
}

std::string offset_s(long long ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%lld.%llds", ms < 0 ? "-" : "+", std::llabs(ms) / 1000,
                std::llabs(ms) % 1000 / 100);
  return buf;
}

}  // namespace gantry::cli
