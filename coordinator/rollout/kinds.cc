#include "coordinator/rollout/kinds.h"

namespace gantry::rollout {

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kSucceeded:
      return "succeeded";
    case Outcome::kFailedReverted:
      return "failed_reverted";
    case Outcome::kFailed:
      return "failed";
  }
  return "failed";
}

std::optional<Outcome> parse_outcome(std::string_view s) {
  if (s == "succeeded") return Outcome::kSucceeded;
  if (s == "failed_reverted") return Outcome::kFailedReverted;
  if (s == "failed") return Outcome::kFailed;
  return std::nullopt;
}

const char* order_kind_name(OrderKind k) { return k == OrderKind::kRollback ? "rollback" : "update"; }

std::optional<OrderKind> parse_order_kind(std::string_view s) {
  if (s == "update") return OrderKind::kUpdate;
  if (s == "rollback") return OrderKind::kRollback;
  return std::nullopt;
}

const char* signal_kind_name(SignalKind k) { return k == SignalKind::kRollback ? "rollback" : "abort"; }

std::optional<SignalKind> parse_signal_kind(std::string_view s) {
  if (s == "abort") return SignalKind::kAbort;
  if (s == "rollback") return SignalKind::kRollback;
  return std::nullopt;
}

const char* unknown_hosts_name(UnknownHosts u) { return u == UnknownHosts::kWait ? "wait" : "fail"; }

std::optional<UnknownHosts> parse_unknown_hosts(std::string_view s) {
  if (s == "fail") return UnknownHosts::kFail;
  if (s == "wait") return UnknownHosts::kWait;
  return std::nullopt;
}

}  // namespace gantry::rollout
