// Start-first for a binary service with two slots (agent/driver/slots.h): the new release is
// started in the slot the live instance does not use, verified there, given traffic, and only
// then is the old instance drained and stopped. The old instance is not touched before the new
// one passed verification (and the post-allow verification, when configured).
//
// An update, in order (the Progress phase each step sends in brackets):
//   1. block the new slot's traffic (it must get none before it is verified)  [none]
//   2. point <root>/slots/<new> at the release                                 [swapping]
//   3. stop whatever still runs in the new slot, start the new instance        [restarting]
//   4. verify it: the probes on the new slot's port                            [verifying]
//   5. allow traffic to it (and, with HAProxy, wait until UP)                  [allowing_traffic, traffic_allowed]
//   6. post-allow verification                                                 [verifying_traffic]
//   7. block the old slot's traffic, wait for its in-flight work               [draining, waiting_inflight]
//   8. promote: `current` -> the release (rename(2), dir fsynced): the commit
//   9. stop the old instance, remove the old slot's link
// A failure in 1-8 ends in abandon(): the old slot is allowed traffic again, the new instance
// blocked and stopped, its link removed; the old instance kept running throughout. A failure in 9
// is failure::kStopOld: the new release runs, verified, in traffic; the old instance may still
// run, out of traffic. An agent restarted after 8 resumes with resume_promoted(); before 8 it
// starts over from 1 (draining the new slot first, so a new instance that had traffic loses no
// request). Runs on the agent's worker thread; every act is idempotent.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "agent/driver/slots.h"
#include "agent/traffic/lifecycle.h"
#include "common/util/expected.h"

namespace gantry::agent::start_first {

// Error code of a failed stop of the old instance after the promotion (no revert).
inline constexpr const char* kStopOld = "stop_old";

// The engine's acts the sequence uses.
struct Acts {
  SlotDriver* slots = nullptr;
  std::function<Status(const std::string& version)> promote;             // `current` -> version, durably
  std::function<Status(const std::string& slot)> verify;                 // the slot's probes, for min_healthy
  std::function<Status(const std::string& slot, Millis ms)> verify_for;  // passing throughout ms
  // The slot's traffic steps, or null when the service has none.
  std::function<traffic::Lifecycle*(const std::string& slot)> lifecycle;
};

// Steps 1-9 for ctx.to_version into slot `to`; `from` is the other slot (the live instance's,
// or the idle one when nothing ran yet).
Status update(const traffic::StepContext& ctx, const std::string& to, const std::string& from, const Acts& acts,
              const traffic::StepObserver& on_step, const std::atomic<bool>* cancelled);

// After a restart of the agent past step 8 (`current` already names ctx.to_version): verify the
// instance in `to` (without restarting it), allow it, then steps 7 and 9.
Status resume_promoted(const traffic::StepContext& ctx, const std::string& to, const std::string& from,
                       const Acts& acts, const traffic::StepObserver& on_step, const std::atomic<bool>* cancelled);

// Undoes steps 1-8: allows `from` (whose instance was not stopped) traffic again, then blocks
// and stops the instance in `to` and removes its link. Goes on past a failed step; the error
// names every step that failed.
Status abandon(const traffic::StepContext& ctx, const std::string& to, const std::string& from, const Acts& acts);

// ctx for the steps acting on `slot` (GANTRY_SLOT, GANTRY_SLOT_PORT).
traffic::StepContext for_slot(const traffic::StepContext& ctx, const SlotDriver& slots, const std::string& slot);

}  // namespace gantry::agent::start_first
