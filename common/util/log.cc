#include "common/util/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <mutex>

namespace gantry::log {

namespace {
std::mutex g_mu;
spdlog::sink_ptr g_sink;
std::string g_pattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v";
spdlog::level::level_enum g_level = spdlog::level::info;

spdlog::sink_ptr sink() {
  if (!g_sink) {
    g_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    g_sink->set_pattern(g_pattern);
  }
  return g_sink;
}
}  // namespace

void setup(const std::string& program, const std::string& level) {
  std::lock_guard<std::mutex> lk(g_mu);
  (void)program;
  if (std::getenv("JOURNAL_STREAM") != nullptr) g_pattern = "%l [%n] %v";
  g_level = spdlog::level::from_str(level);
  sink()->set_pattern(g_pattern);
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
