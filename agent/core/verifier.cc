#include "agent/core/verifier.h"

#include <algorithm>
#include <optional>

namespace gantry::agent {
namespace {

// Until a round first passes, the service is most likely still starting: restart commands
// return once it is launched, not once it listens. Retrying after a full probe interval then
// costs up to that interval per host (and per batch), so the first retries come after 10 ms,
// doubling up to probe_interval_ms; a slow starter costs a handful of extra probe rounds.
constexpr Millis kStartupRetryMs = 10;

}  // namespace

Verifier::Verifier(const Clock& clock, Sleep sleep, std::function<void()> after_round)
    : clock_(clock), sleep_(std::move(sleep)), after_round_(std::move(after_round)) {}

VerifyResult Verifier::run(const ProbeList& probes, const VerifyPolicy& p, const std::atomic<bool>* cancelled) {
  VerifyResult r;
  const Millis start = clock_.now_ms();
  const Millis deadline = start + p.healthy_deadline_ms;
  std::optional<Millis> streak_start;
  bool ever_passed = false;
  Millis startup_retry = kStartupRetryMs;
  std::string last_failure = "no probe round completed";
  for (;;) {
    if (cancelled && *cancelled) {
      r.cancelled = true;
      r.message = "verification cancelled";
      return r;
    }
    std::string failure;
    Millis probe_timeout = std::clamp<Millis>(p.probe_interval_ms * 4, 200, 2000);
    for (const auto& probe : probes) {
      Status st = probe->check(probe_timeout);
      if (!st.ok()) {
        failure = st.error().message;
        break;
      }
    }
    Millis now = clock_.now_ms();
    if (failure.empty()) {
      ever_passed = true;
      if (!streak_start) streak_start = now;
      r.healthy_ms = std::max(r.healthy_ms, now - *streak_start);
      if (now - *streak_start >= p.min_healthy_ms) {
        r.healthy = true;
        return r;
      }
    } else {
      streak_start.reset();
      last_failure = failure;
    }
    if (after_round_) after_round_();
    if (now >= deadline) break;
    Millis wait = p.probe_interval_ms;
    if (!ever_passed) {
      wait = std::min(wait, startup_retry);
      startup_retry *= 2;
    }
    sleep_(std::min(wait, deadline - now));
  }
  r.message = "verification failed: " + last_failure + " (healthy " + std::to_string(r.healthy_ms) + " ms of " +
              std::to_string(p.min_healthy_ms) + " ms needed)";
  return r;
}

}  // namespace gantry::agent
