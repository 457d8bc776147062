// gantry-coordinator: parse options, build the real parts, run the loop.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <vector>

#include "common/security/keys.h"
#include "common/util/log.h"
#include "common/util/rlimit.h"
#include "common/util/sd_notify.h"
#include "common/version.h"
#include "coordinator/ha/standby_then_lead.h"
#include "coordinator/rollout/state_machine.h"
#include "coordinator/server/config_options.h"
#include "coordinator/server/coordinator.h"
#include "coordinator/store/migrate.h"
#include "coordinator/store/store.h"

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

// Runs the coordinator's loop until `stop`, with systemd's watchdog fed while the loop turns.
void run_with_watchdog(gantry::coordinator::Coordinator& coord, const std::atomic<bool>& stop, bool notify_ready) {
  auto log = gantry::log::get("coordinator");
  if (notify_ready) gantry::sd::notify("READY=1");
  // WATCHDOG=1 at half the interval systemd asked for, but only while the event loop turns (it
  // wakes at least every 100 ms): a loop stuck for longer than `stall` stops the pings, and
  // systemd restarts the daemon once WatchdogSec= passes without one.
  const uint64_t wd_usec = gantry::sd::watchdog_usec();
  std::thread watchdog;
  std::atomic<bool> wd_stop{false};
  if (wd_usec > 0) {
    watchdog = std::thread([&] {
      using namespace std::chrono;
      const auto every = microseconds(std::max<uint64_t>(wd_usec / 2, 1000));
      const auto stall = std::max<steady_clock::duration>(every, seconds(2));
      uint64_t last_turns = coord.loop_turns();
      auto last_change = steady_clock::now();
      auto next = last_change;
      bool warned = false;
      while (!wd_stop) {
        auto now = steady_clock::now();
        if (uint64_t turns = coord.loop_turns(); turns != last_turns) {
          last_turns = turns;
          last_change = now;
        }
        if (now >= next) {
          if (now - last_change <= stall) {
            gantry::sd::notify("WATCHDOG=1");
            warned = false;
          } else if (!warned) {
            log->error("event loop stuck for {} ms; withholding the watchdog ping",
                       duration_cast<milliseconds>(now - last_change).count());
            warned = true;
          }
          next = now + every;
        }
        std::this_thread::sleep_for(std::min<steady_clock::duration>(next - now, milliseconds(20)));
      }
    });
  }
  coord.run(stop);
  gantry::sd::notify("STOPPING=1");
  wd_stop = true;
  if (watchdog.joinable()) watchdog.join();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "keygen") {
    return gantry::security::curve_keygen_main("gantry-coordinator", std::vector<std::string>(argv + 2, argv + argc));
  }
  if (argc >= 2 && std::string(argv[1]) == "migrate") {  // SQLite store -> etcd store (coordinator/store/migrate.h)
    return gantry::store::migrate_main(std::vector<std::string>(argv + 2, argv + argc));
  }
  // The integration tests set this: every rollout step re-checks its incremental bookkeeping.
  if (const char* c = std::getenv("GANTRY_ROLLOUT_SELF_CHECK"); c != nullptr && std::string(c) == "1") {
    gantry::rollout::set_self_check(true);
  }
  auto opts = gantry::coordinator::parse_config_options(std::vector<std::string>(argv + 1, argv + argc));
  if (!opts) {
    std::cerr << "gantry-coordinator: " << opts.error().message << "\n(see gantry-coordinator --help)\n";
    return 2;
  }
  if (opts->help) {
    std::cout << opts->text << "\n";
    return 0;
  }
  if (opts->version) {
    std::cout << "gantry-coordinator " << gantry::kGantryVersion << "\n";
    return 0;
  }
  const gantry::coordinator::Config& cfg = opts->config;
  gantry::log::setup("gantry-coordinator", opts->log_level);
  auto log = gantry::log::get("coordinator");
  for (const auto& w : opts->warnings) log->warn("{}", w);
  if (cfg.insecure_dev)
    log->warn("INSECURE: running without CURVE; any process that reaches the sockets can act as an agent or operator");

  // One descriptor per agent connection: 10,000 agents need far more than the usual soft 1024.
  auto nofile = gantry::raise_fd_limit();
  if (nofile < 16384) log->warn("open-file limit is {}; each agent connection needs one descriptor", nofile);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  gantry::SystemClock clock;
  if (cfg.etcd()) {
    // Standby until elected, then the leader (docs/HIGH_AVAILABILITY.md).
    return gantry::coordinator::ha::standby_then_lead(
        cfg, clock, g_stop,
        [&](std::unique_ptr<gantry::store::Store> store, uint64_t epoch, gantry::coordinator::PeerEndpoints& peers,
            gantry::coordinator::ArtifactCopies& copies, const std::atomic<bool>& stop) {
          gantry::coordinator::Coordinator coord(cfg, clock, std::move(store), epoch);
          coord.set_peers(&peers);
          coord.set_copies(&copies);
          if (auto s = coord.start(); !s.ok()) {
            log->critical("cannot start: {}", s.error().message);
            return 1;
          }
          run_with_watchdog(coord, stop, /*notify_ready=*/false);
          return 0;
        });
  }
  gantry::coordinator::Coordinator coord(cfg, clock);
  if (auto s = coord.start(); !s.ok()) {
    log->critical("cannot start: {}", s.error().message);
    return 1;
  }
  run_with_watchdog(coord, g_stop, /*notify_ready=*/true);
  return 0;
}
