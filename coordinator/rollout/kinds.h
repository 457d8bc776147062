// The closed sets the rollout core decides with, as enums: a host's report outcome, the kind of
// an order, the kind of a broadcast signal, and how unknown hosts count. The wire, the store and
// plan files keep the strings; they are converted where they enter or leave (name / parse).
#pragma once

#include <optional>
#include <string_view>

namespace gantry::rollout {

enum class Outcome { kSucceeded, kFailedReverted, kFailed };
enum class OrderKind { kUpdate, kRollback };
enum class SignalKind { kAbort, kRollback };
// kFail: an unknown host counts as failed at once; kWait: only after unknown_wait_ms.
enum class UnknownHosts { kFail, kWait };

const char* outcome_name(Outcome o);  // "succeeded" | "failed_reverted" | "failed"
std::optional<Outcome> parse_outcome(std::string_view s);
const char* order_kind_name(OrderKind k);  // "update" | "rollback"
std::optional<OrderKind> parse_order_kind(std::string_view s);
const char* signal_kind_name(SignalKind k);  // "abort" | "rollback"
std::optional<SignalKind> parse_signal_kind(std::string_view s);
const char* unknown_hosts_name(UnknownHosts u);  // "fail" | "wait"
std::optional<UnknownHosts> parse_unknown_hosts(std::string_view s);

}  // namespace gantry::rollout
