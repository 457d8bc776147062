// Process resource limits the daemons and the benchmark tools raise for themselves.
#pragma once

#include <cstdint>

namespace gantry {

// Raises the soft RLIMIT_NOFILE to the hard limit (one fd per peer connection adds up at
// 10,000 agents). Returns the soft limit in effect afterwards.
uint64_t raise_fd_limit();

}  // namespace gantry
