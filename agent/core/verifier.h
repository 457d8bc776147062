// Local verification of a freshly restarted release: every probe_interval_ms run all probes;
// healthy iff all pass continuously for min_healthy_ms before healthy_deadline_ms. Until the
// first round passes (the service is still starting) rounds come sooner: 10 ms, doubling up to
// probe_interval_ms.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "agent/probe/probe.h"
#include "common/util/clock.h"

namespace gantry::agent {

struct VerifyPolicy {
  Millis probe_interval_ms = 250;
  Millis min_healthy_ms = 2000;
  Millis healthy_deadline_ms = 30000;
};

struct VerifyResult {
  bool healthy = false;
  bool cancelled = false;
  Millis healthy_ms = 0;  // longest streak of passing rounds
  std::string message;  // why not healthy: "verification failed: <probe> returned 500 (healthy 0 ms of 2000 ms needed)"
};

class Verifier {
 public:
  using Sleep = std::function<void(Millis)>;
  // `sleep` waits (or, with a FakeClock, advances time); `after_round` runs after each probe round.
  Verifier(const Clock& clock, Sleep sleep, std::function<void()> after_round = {});
  VerifyResult run(const ProbeList& probes, const VerifyPolicy& p, const std::atomic<bool>* cancelled = nullptr);

 private:
  const Clock& clock_;
  Sleep sleep_;
  std::function<void()> after_round_;
};

}  // namespace gantry::agent
