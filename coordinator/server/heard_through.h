// Up to when the coordinator has read everything its agents sent: the time a host's silence is
// measured at. A host is silent only while the coordinator listens; a loop turn that stalls
// (a store write riding out an etcd election, a process stopped and resumed) must not make the
// hosts whose heartbeats wait unread in its sockets count as lost.
//
// A turn's wait for input that returned at time R with the agents' socket (and datagrams)
// polled has read, once its drains empty them, everything sent before R: R is "heard through"
// from then on, whatever time the rest of the turn takes. A wait that returned much later than
// asked (the process was frozen: its I/O thread too may not have queued what arrived) is heard
// through its latest ordinary return only (asked + timeout + late), not its real one; the next
// turn's wait reads what waited. A turn whose drains stopped at their budget is heard
// through R - backlog only: input waits unread, but a peer that keeps the sockets full (a
// datagram flood, an agent sending without pause) holds every judgment back by at most that
// bound, never indefinitely. Pure logic: the caller gives every time.
#pragma once

#include <optional>

#include "common/util/clock.h"

namespace gantry::coordinator {

class HeardThrough {
 public:
  // `start`: when the loop starts (nothing is known before). `late_ms`: a wait that returns
  // more than this after its timeout was frozen. `backlog_ms`: how far input left unread by a
  // drain's budget may hold the judgment back.
  HeardThrough(Millis start, Millis late_ms, Millis backlog_ms)
      : through_(start), late_ms_(late_ms), backlog_ms_(backlog_ms) {}

  // A turn's wait: asked at `asked` for at most `timeout_ms`, returned at `returned`;
  // `listening` false when the agents' input was held back (not polled) this turn.
  void waited(Millis asked, Millis timeout_ms, Millis returned, bool listening);
  // This turn's drains stopped at their budget: input sent before the wait's return is unread.
  void left_unread();
  // Everything the agents sent before this time has been read.
  Millis through() const;

 private:
  Millis through_;
  Millis late_ms_;
  Millis backlog_ms_;
  Millis returned_ = 0;              // when this turn's wait returned
  std::optional<Millis> candidate_;  // this turn's wait, once its reads are complete
};

}  // namespace gantry::coordinator
