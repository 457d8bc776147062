// Test-only fault hook: with GANTRY_AGENT_CRASH_AT=<point> in the environment the agent
// dies with _exit(137) (as if SIGKILLed) right at that point, so integration tests can
// kill it at exact places of an update. Points: after_fetch, after_stage, before_swap,
// after_swap, during_restart, during_verify; container_stopped (container driver: the old
// container is stopped and removed, the new one not yet started).
#pragma once

namespace gantry::agent {

// Exits the process with 137 if GANTRY_AGENT_CRASH_AT names `point`; otherwise does nothing.
void crash_point(const char* point);

}  // namespace gantry::agent
