// Set by whatever changes what /status shows (a hello, a step, an operator command); the loop
// rebuilds the status snapshot when it is set.
#pragma once

#include <utility>

namespace gantry::coordinator {

class ChangeFlag {
 public:
  // Something /status shows has changed.
  void mark() { set_ = true; }
  bool is_set() const { return set_; }
  // Whether it was set since the last take; clears it.
  bool take() { return std::exchange(set_, false); }

 private:
  bool set_ = true;  // the first snapshot is always built
};

}  // namespace gantry::coordinator
