// The etcd store's rows as values (store internals): each row one small JSON object. Encoding
// throws nlohmann's type_error for text that is not UTF-8 (the store turns it into an Error).
// Decoding treats every stored value as hostile: anything that is not the expected JSON (not
// JSON, a field missing or of another type) is an Error naming the key, never a throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/util/expected.h"
#include "coordinator/store/store.h"

namespace gantry::store::etcd_codec {

// Ids the store hands out (rollouts, events, audit rows; an order's and a release's sequence
// number, for SQLite's rowid order) and the unfenced start counter.
struct Counters {
  uint64_t rollout = 0;
  uint64_t event = 0;
  uint64_t audit = 0;
  uint64_t order = 0;
  uint64_t release = 0;
  uint64_t epoch = 0;
  uint64_t group = 0;  // result and timeline groups written (absent in a store written before groups: 0)
};

// Rows written together are grouped (docs/HIGH_AVAILABILITY.md, "etcd key layout"): a
// transaction's new orders of one rollout are one key, its results another, its events and its
// timeline entries others, a rollout's first slots its plan; each group holds at most this many
// rows.
inline constexpr size_t kMaxGroupRows = 256;

// An order as stored (in a group under <prefix>order/<rollout>/), written once when it is made:
// the row and its sequence number. It is open until a result for it (in a group under
// <prefix>result/<rollout>/) exists; acknowledged when `acked` (a migrated row) or its mark
// <prefix>order_acked/<rollout>/<order> exists. A rollout's orders and marks are deleted when it
// ends.
struct OrderRecord {
  OrderRow row;
  uint64_t seq = 0;
};

// A report as stored, with its order's sequence number (results() sort by at, then that).
struct ResultRecord {
  ResultRow row;
  uint64_t seq = 0;
};

std::string encode(const Counters& c);
std::string encode(const HostRow& h);
std::string encode(const ReleaseRow& r);
// The header: everything but the host slots (r.state as given).
std::string encode(const RolloutRow& r);
// Groups: a JSON array of the rows' objects.
std::string encode(const std::vector<OrderRecord>& rows);
std::string encode(const std::vector<ResultRecord>& rows);
std::string encode(const std::vector<TimelineRow>& rows);
std::string encode(const std::vector<EventRow>& rows);
// A slot plan: a JSON array of slot texts (HostSlot::to_json_text(): JSON, not checked here).
std::string encode_slot_plan(const std::vector<std::string>& slot_texts);
std::string encode(const AuditRow& a);
std::string encode(const DesiredRow& d);
std::string encode(const AgentKeyRow& k);
std::string encode(const OperatorKeyRow& k);

Expected<Counters> decode_counters(const std::string& key, const std::string& value);
Expected<HostRow> decode_host(const std::string& key, const std::string& value);
Expected<ReleaseRow> decode_release(const std::string& key, const std::string& value);
Expected<RolloutRow> decode_rollout(const std::string& key, const std::string& value);
// A group: a non-empty array of at most kMaxGroupRows rows, or one row (a store written before
// groups).
Expected<std::vector<OrderRecord>> decode_order_group(const std::string& key, const std::string& value);
Expected<std::vector<ResultRecord>> decode_result_group(const std::string& key, const std::string& value);
Expected<std::vector<TimelineRow>> decode_timeline_group(const std::string& key, const std::string& value);
Expected<std::vector<EventRow>> decode_event_group(const std::string& key, const std::string& value);
// A slot plan: a non-empty array of at most kMaxGroupRows slots, each any JSON.
Expected<std::vector<nlohmann::json>> decode_slot_plan(const std::string& key, const std::string& value);
Expected<AuditRow> decode_audit(const std::string& key, const std::string& value);
// A plan that is not an object reads as {} (as SQLite's reader does).
Expected<DesiredRow> decode_desired(const std::string& key, const std::string& value);
Expected<AgentKeyRow> decode_agent_key(const std::string& key, const std::string& value);
Expected<OperatorKeyRow> decode_operator_key(const std::string& key, const std::string& value);
// A host slot: its JSON text, parsed.
Expected<nlohmann::json> decode_slot(const std::string& key, const std::string& value);

}  // namespace gantry::store::etcd_codec
