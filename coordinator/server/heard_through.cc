#include "coordinator/server/heard_through.h"

#include <algorithm>

namespace gantry::coordinator {

void HeardThrough::waited(Millis asked, Millis timeout_ms, Millis returned, bool listening) {
  if (candidate_) through_ = std::max(through_, *candidate_);
  candidate_.reset();
  returned_ = returned;
  if (listening && returned - asked <= timeout_ms + late_ms_) candidate_ = returned;
}

void HeardThrough::left_unread() {
  if (candidate_) candidate_ = std::max(through_, returned_ - backlog_ms_);
}

Millis HeardThrough::through() const { return candidate_ ? std::max(through_, *candidate_) : through_; }

}  // namespace gantry::coordinator
