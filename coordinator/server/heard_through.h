// Up to when the coordinator has read everything its agents sent: the time a host's silence is
// measured at. A host is silent only while the coordinator listens; a loop turn that stalls
// (a store write riding out an etcd election, a process stopped and resumed) must not make the
// hosts whose heartbeats wait unread in its sockets count as lost.
//
// A turn's wait for input that returned at time R with the agents' socket (and datagrams)
// polled has read, once its drains empty them, everything sent before R: R is "heard through"
// from then on, whatever time the rest of the turn takes. A wait that returned much later than
// asked (the process was frozen: its I/O thread too may not have queued what arrived) or whose
// drains stopped at their budget moves nothing; the next turn's wait does. Pure logic: the
// caller gives every time.
#pragma once

#include <optional>

#include "common/util/clock.h"

namespace gantry::coordinator {

class HeardThrough {
 public:
  // `start`: when the loop starts (nothing is known before). `late_ms`: a wait that returns
  // more than this after its timeout was frozen.
  HeardThrough(Millis start, Millis late_ms) : through_(start), late_ms_(late_ms) {}

  // A turn's wait: asked at `asked` for at most `timeout_ms`, returned at `returned`;
  // `listening` false when the agents' input was held back (not polled) this turn.
  void waited(Millis asked, Millis timeout_ms, Millis returned, bool listening);
  // This turn's drains stopped at their budget: input sent before the wait's return is unread.
  void left_unread() { candidate_.reset(); }
  // Everything the agents sent before this time has been read.
  Millis through() const;

 private:
  Millis through_;
  Millis late_ms_;
  std::optional<Millis> candidate_;  // this turn's wait, once its reads are complete
};

}  // namespace gantry::coordinator
