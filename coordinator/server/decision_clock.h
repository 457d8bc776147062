// The clock the rollout decisions run on: it moves with the monotonic clock, so a step of the
// system's wall clock (an NTP correction, a VM resumed, an operator's `date -s`) neither times
// out a host nor holds one up; and it carries on from the latest stored decision time when the
// coordinator restarts (a new process has a new monotonic origin).
//
// Its values are milliseconds near the Unix epoch (it starts at the wall clock) but are not wall
// time: they are kept inside rollout states (deadlines, when a host was ordered). Every time
// shown to people (events, audit, timelines, rollout rows) is read from the wall clock instead.
#pragma once

#include "common/util/clock.h"

namespace gantry::coordinator {

class DecisionClock {
 public:
  explicit DecisionClock(const Clock& clock);

  // Decision time now: wall time at construction plus the monotonic time since, or later (see
  // resume_from). Never goes back.
  Millis now() const;
  // After a restart: `floor` is the latest decision time the store holds (0: none). If the
  // wall clock is behind it (it was stepped back while the coordinator was down), decision
  // time continues from `floor` instead, so no stored deadline is moved away or brought near.
  void resume_from(Millis floor);

 private:
  const Clock& clock_;
  Millis origin_;       // decision time at mono_origin_
  Millis mono_origin_;  // clock_.now_ms() at construction
};

}  // namespace gantry::coordinator
