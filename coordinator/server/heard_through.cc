#include "coordinator/server/heard_through.h"

#include <algorithm>

namespace gantry::coordinator {

void HeardThrough::waited(Millis asked, Millis timeout_ms, Millis returned, bool listening) {
  if (candidate_) through_ = std::max(through_, *candidate_);
  candidate_.reset();
  if (listening && returned - asked <= timeout_ms + late_ms_) candidate_ = returned;
}

Millis HeardThrough::through() const { return candidate_ ? std::max(through_, *candidate_) : through_; }

}  // namespace gantry::coordinator
