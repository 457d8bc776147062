#include "common/util/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace gantry::log {

namespace {
std::mutex g_mu;
spdlog::sink_ptr g_sink;
bool g_journal = false;
spdlog::level::level_enum g_level = spdlog::level::info;

// "<N>" syslog priority prefix: journald reads it off a stream (SyslogLevelPrefix=yes, the
// default) and files the line at that priority, so `journalctl -p warning` works.
class SyslogPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    // trace, debug, info, warn, err, critical, off
    static const char* kPrio[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    const char* p = kPrio[static_cast<int>(msg.level) < 7 ? static_cast<int>(msg.level) : 6];
    dest.append(p, p + std::strlen(p));
  }
  std::unique_ptr<spdlog::custom_flag_formatter> clone() const override { return std::make_unique<SyslogPriority>(); }
};

void apply_format(const spdlog::sink_ptr& s) {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  if (g_journal) {
    // journald stamps every line itself: no timestamp here, a priority prefix instead.
    f->add_flag<SyslogPriority>('*').set_pattern("%*%l [%n] %v");
  } else {
    f->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  }
  s->set_formatter(std::move(f));
}

spdlog::sink_ptr sink() {
  if (!g_sink) {
    g_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    apply_format(g_sink);
  }
  return g_sink;
}
}  // namespace

void setup(const std::string& program, const std::string& level) {
  std::lock_guard<std::mutex> lk(g_mu);
  (void)program;
  g_journal = std::getenv("JOURNAL_STREAM") != nullptr;
  g_level = spdlog::level::from_str(level);
  apply_format(sink());
  spdlog::apply_all([](std::shared_ptr<spdlog::logger> l) { l->set_level(g_level); });
}

std::shared_ptr<spdlog::logger> get(const std::string& subsystem) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (auto l = spdlog::get(subsystem)) return l;
  auto l = std::make_shared<spdlog::logger>(subsystem, sink());
  l->set_level(g_level);
  spdlog::register_logger(l);
  return l;
}

}  // namespace gantry::log
