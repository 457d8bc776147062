#include "coordinator/server/decision_clock.h"

namespace gantry::coordinator {

DecisionClock::DecisionClock(const Clock& clock)
    : clock_(clock), origin_(clock.wall_ms()), mono_origin_(clock.now_ms()) {}

Millis DecisionClock::now() const { return origin_ + (clock_.now_ms() - mono_origin_); }

void DecisionClock::resume_from(Millis floor) {
  const Millis at = now();
  if (floor > at) origin_ += floor - at;
}

}  // namespace gantry::coordinator
