// Logging setup: one named spdlog logger per subsystem, stderr, journald-friendly.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace gantry::log {

// Configures the default sink once per process. Under systemd (JOURNAL_STREAM set) lines
// carry no timestamp, since journald adds its own, but a "<N>" syslog priority prefix. `level` is an spdlog level name.
void setup(const std::string& program, const std::string& level = "info");

// The logger for a subsystem ("store", "rollout", "agent.driver", ...); created on first use.
std::shared_ptr<spdlog::logger> get(const std::string& subsystem);

}  // namespace gantry::log
