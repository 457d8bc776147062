// The two pieces of systemd's notify protocol the daemons use (sd_notify(3),
// sd_watchdog_enabled(3)), without linking libsystemd: that library and the six it loads
// (gcrypt, gpg-error, lzma, zstd, lz4, cap) were about 1 MiB of the idle agent's resident
// memory, for one datagram now and then.
#pragma once

#include <cstdint>
#include <string>

namespace gantry::sd {

// Sends `state` ("READY=1", "STATUS=...", "WATCHDOG=1", ...) to $NOTIFY_SOCKET (a path, or
// "@name" for the abstract namespace). True if sent; false when not run by systemd or on error.
bool notify(const std::string& state);

// The watchdog interval systemd expects pings within, from $WATCHDOG_USEC (and $WATCHDOG_PID,
// when set, must be this process); 0 when there is no watchdog.
uint64_t watchdog_usec();

}  // namespace gantry::sd
