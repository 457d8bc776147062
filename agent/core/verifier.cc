#include "agent/core/verifier.h"

#include <algorithm>
#include <optional>

namespace gantry::agent {

Verifier::Verifier(const Clock& clock, Sleep sleep, std::function<void()> after_round)
    : clock_(clock), sleep_(std::move(sleep)), after_round_(std::move(after_round)) {}

VerifyResult Verifier::run(const ProbeList& probes, const VerifyPolicy& p, const std::atomic<bool>* cancelled) {
  VerifyResult r;
  const Millis start = clock_.now_ms();
  const Millis deadline = start + p.healthy_deadline_ms;
  std::optional<Millis> streak_start;
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
    sleep_(std::min(p.probe_interval_ms, deadline - now));
  }
  r.message = "verification failed: " + last_failure + " (healthy " + std::to_string(r.healthy_ms) + " ms of " +
              std::to_string(p.min_healthy_ms) + " ms needed)";
  return r;
}

}  // namespace gantry::agent
