// The life of a coordinator on the etcd store (--store etcd://...): it stands by (StandbyServer)
// and campaigns every kCampaignEveryMs until it is elected, then leads: the etcd store fenced on
// its leadership is handed to `lead`, which runs the coordinator until `stop` or until the
// leadership is lost. A lost leadership ends the process with kExitLostLeadership (systemd's
// Restart= brings it back as a standby); a clean stop resigns, so a standby takes over at once.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "common/util/clock.h"
#include "coordinator/server/config.h"

namespace gantry::store {
class Store;
}

namespace gantry::coordinator {
class ArtifactCopies;
class PeerEndpoints;
}  // namespace gantry::coordinator

namespace gantry::coordinator::ha {

inline constexpr int kExitLostLeadership = 75;  // EX_TEMPFAIL
inline constexpr Millis kCampaignEveryMs = 250;
// How long a leader that lost its leadership waits for its loop to end before it ends the
// process itself (less than LeaderElection::kSafetyMs: it is gone before its lease can expire).
inline constexpr int64_t kLostGraceMs = 300;

// Runs the coordinator on the store it is given until `stop` becomes true; returns the exit code.
// `peers`: the other coordinators, where artifacts it lacks are copied from; `copies`: where
// the coordinators record the artifacts they hold (an upload is acknowledged once all do).
using LeadFn = std::function<int(std::unique_ptr<store::Store> store, uint64_t epoch, PeerEndpoints& peers,
                                 ArtifactCopies& copies, const std::atomic<bool>& stop)>;

// Returns the process's exit code: 0 after a clean stop, 1 when it cannot start (etcd
// unreachable at start is not that: it keeps trying while standing by), kExitLostLeadership.
int standby_then_lead(const Config& cfg, Clock& clock, const std::atomic<bool>& stop, const LeadFn& lead);

}  // namespace gantry::coordinator::ha
