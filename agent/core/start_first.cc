#include "agent/core/start_first.h"

#include "agent/core/fault.h"
#include "common/util/log.h"

namespace gantry::agent::start_first {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.start_first"); }

// Steps of `slot` are announced as "<phase>|<detail>" (Agent::on_step shows the detail).
traffic::StepObserver about(const traffic::StepObserver& on_step, const std::string& slot, const std::string& version) {
  return [on_step, slot, version](const std::string& ph) {
    on_step(ph + "|slot " + slot + (version.empty() ? "" : " (" + version + ")"));
  };
}

void ignore(const std::string&) {}

bool is_cancelled(const Status& st) { return !st.ok() && st.error().code == "cancelled"; }

// Steps 4-7 and 9 (shared by update and resume_promoted; `promote` is step 8).
Status verify_allow_and_retire(const traffic::StepContext& ctx, const std::string& to, const std::string& from,
                               const Acts& acts, const traffic::StepObserver& on_step,
                               const std::atomic<bool>* cancelled, const std::function<Status()>& promote) {
  const traffic::StepContext to_ctx = for_slot(ctx, *acts.slots, to);
  const traffic::StepContext from_ctx = for_slot(ctx, *acts.slots, from);
  traffic::Lifecycle* to_lc = acts.lifecycle(to);
  traffic::Lifecycle* from_lc = acts.lifecycle(from);
  const auto on_to = about(on_step, to, ctx.to_version);

  on_to("verifying");
  if (Status st = acts.verify(to); !st.ok()) return st;
  if (to_lc) {
    if (Status st = to_lc->allow_traffic(to_ctx, on_to, cancelled); !st.ok()) return st;
    traffic::HostActs host;
    host.verify_for = [&](Millis ms) { return acts.verify_for(to, ms); };
    if (Status st = to_lc->verify_allowed(to_ctx, host, on_to, cancelled); !st.ok()) return st;
  }
  crash_point("start_first_allowed");  // tests: both instances in traffic, `current` not switched
  // The new instance is verified and serving: only now does the old one leave traffic.
  if (from_lc) {
    if (Status st = from_lc->block(from_ctx, about(on_step, from, ctx.from_version), cancelled); !st.ok()) return st;
  }
  if (Status st = promote(); !st.ok()) return st;
  if (Status st = acts.slots->stop_slot(from, ctx.from_version); !st.ok())
    return make_error(kStopOld, "stopping the old instance in slot " + from + " failed: " + st.error().message);
  if (Status st = acts.slots->unlink_slot(from); !st.ok())
    lg()->warn("{}: removing the link of slot {}: {}", ctx.service, from, st.error().message);
  return Status::Ok();
}

}  // namespace

traffic::StepContext for_slot(const traffic::StepContext& ctx, const SlotDriver& slots, const std::string& slot) {
  traffic::StepContext c = ctx;
  c.slot = slot;
  for (const auto& s : slots.slots())
    if (s.name == slot) c.slot_port = s.port;
  return c;
}

Status update(const traffic::StepContext& ctx, const std::string& to, const std::string& from, const Acts& acts,
              const traffic::StepObserver& on_step, const std::atomic<bool>* cancelled) {
  const auto on_to = about(on_step, to, ctx.to_version);
  // 1. Whatever the new slot's server was doing, it takes no traffic until verified. Not
  // announced: at rest the idle slot is already blocked and this returns at once.
  if (traffic::Lifecycle* lc = acts.lifecycle(to)) {
    if (Status st = lc->block(for_slot(ctx, *acts.slots, to), ignore, cancelled, /*allow_back=*/false); !st.ok())
      return is_cancelled(st) ? st : make_error(st.error().code, "slot " + to + ": " + st.error().message);
  }
  on_to("swapping");
  if (Status st = acts.slots->link_slot(to, ctx.to_version); !st.ok())
    return make_error("swap", "linking slot " + to + " failed: " + st.error().message);
  on_to("restarting");
  if (Status st = acts.slots->stop_slot(to, ctx.to_version); !st.ok()) return st;
  if (Status st = acts.slots->start_slot(to, ctx.to_version); !st.ok()) return st;
  return verify_allow_and_retire(ctx, to, from, acts, on_step, cancelled, [&] { return acts.promote(ctx.to_version); });
}

Status resume_promoted(const traffic::StepContext& ctx, const std::string& to, const std::string& from,
                       const Acts& acts, const traffic::StepObserver& on_step, const std::atomic<bool>* cancelled) {
  return verify_allow_and_retire(ctx, to, from, acts, on_step, cancelled, [] { return Status::Ok(); });
}

Status abandon(const traffic::StepContext& ctx, const std::string& to, const std::string& from, const Acts& acts) {
  std::string failed;
  auto note = [&](const std::string& what, const Status& st) {
    if (st.ok()) return;
    failed += (failed.empty() ? "" : "; ") + what + ": " + st.error().message;
    lg()->error("{}: {}: {}", ctx.service, what, st.error().message);
  };
  // First the old slot back in traffic (a failed drain of it, step 7, or the switch, step 8,
  // left it drained), so the host keeps serving while the new instance leaves. Not a slot that
  // never ran anything (a first install): its server stays blocked.
  auto from_version = acts.slots->slot_version(from);
  if (traffic::Lifecycle* lc = acts.lifecycle(from); lc && from_version && !from_version->empty())
    note("allowing slot " + from, lc->unblock(for_slot(ctx, *acts.slots, from)));
  if (traffic::Lifecycle* lc = acts.lifecycle(to))
    note("blocking slot " + to, lc->block(for_slot(ctx, *acts.slots, to), ignore, nullptr, /*allow_back=*/false));
  note("stopping slot " + to, acts.slots->stop_slot(to, ctx.to_version));
  note("removing the link of slot " + to, acts.slots->unlink_slot(to));
  if (!failed.empty()) return make_error("revert", failed);
  return Status::Ok();
}

}  // namespace gantry::agent::start_first
