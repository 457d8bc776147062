// Rollouts the agent heard a stop signal for (agent/core/stopped_rollouts.h).
#include "agent/core/stopped_rollouts.h"

namespace gantry::agent {

void StoppedRollouts::remember(uint64_t rollout_id, const std::string& service, const std::string& kind) {
  bool seen = false;
  for (const auto& st : stopped_) seen = seen || (st.rollout_id == rollout_id && st.service == service);
  if (seen) return;
  stopped_.push_back({rollout_id, service, kind});
  while (stopped_.size() > kMax) stopped_.pop_front();
}

const std::string* StoppedRollouts::stopped_by(uint64_t rollout_id, const std::string& service) const {
  for (const auto& st : stopped_)
    if (st.rollout_id == rollout_id && st.service == service) return &st.kind;
  return nullptr;
}

}  // namespace gantry::agent
