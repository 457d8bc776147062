// Aligned text tables for people; the CLI's --json output bypasses this.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace gantry::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print(std::ostream& out) const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "3s ago", "2m ago", "-" for negative.
std::string ago(long long ms);
// Local time "2026-11-26 05:40:12" of wall ms since epoch ("-" for 0).
std::string when(long long wall_ms);
// Local time of day with milliseconds, "05:40:12.120" ("-" for 0).
std::string time_of_day_ms(long long wall_ms);
// "+0.8s": `ms` as seconds with one decimal, signed.
std::string offset_s(long long ms);

}  // namespace gantry::cli
