// The journal of the order engine: every write of AgentState goes through persist(), which
// times it for the active order's `timings:` line and logs a failure; persist_or_note()
// keeps the first failure for the active order's report.
#include "agent/core/agent.h"

#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

Status Agent::persist(bool lazy) {
  int64_t t0 = steady_us();
  Status st = lazy ? store_.save_lazy(state_) : store_.save(state_);
  last_persist_us_ = steady_us() - t0;
  if (state_.active) {
    times_.journal_us += last_persist_us_;
    ++times_.journal_writes;
  }
  if (!st.ok()) lg()->error("state write failed: {}", st.error().message);
  return st;
}

// Saves; on failure remembers the error for the active order's report and returns false.
bool Agent::persist_or_note(bool lazy) {
  Status st = persist(lazy);
  if (st.ok()) return true;
  if (state_error_.empty()) state_error_ = st.error().message;
  return false;
}

}  // namespace gantry::agent
