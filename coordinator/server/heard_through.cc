#include "coordinator/server/heard_through.h"

#include <algorithm>

namespace gantry::coordinator {

void HeardThrough::waited(Millis asked, Millis timeout_ms, Millis returned, bool listening) {
  if (candidate_) through_ = std::max(through_, *candidate_);
  candidate_.reset();
  returned_ = returned;
  if (!listening) return;
  // Late: frozen (or starved of CPU) in the wait; heard through no later than its latest
  // ordinary return, so a loop that is late every turn still moves on, one turn behind.
  candidate_ = returned - asked <= timeout_ms + late_ms_ ? returned : asked + timeout_ms + late_ms_;
}

void HeardThrough::left_unread() {
  if (candidate_) candidate_ = std::max(through_, returned_ - backlog_ms_);
}

Millis HeardThrough::through() const { return candidate_ ? std::max(through_, *candidate_) : through_; }

}  // namespace gantry::coordinator
