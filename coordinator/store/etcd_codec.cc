#include "coordinator/store/etcd_codec.h"

#include <limits>

#include "common/util/text.h"

namespace gantry::store::etcd_codec {

namespace {

using nlohmann::json;

// Reads the fields of one stored object; the first problem is kept and reported.
class Fields {
 public:
  Fields(const std::string& key, const std::string& value)
      : Fields(key, json::parse(value, nullptr, /*allow_exceptions=*/false)) {}
  // One element of a stored group (an array of rows).
  Fields(const std::string& key, json j) : key_(key), j_(std::move(j)) {
    if (j_.is_discarded() || !j_.is_object()) fail("not a JSON object");
  }
  bool ok() const { return err_.empty(); }
  Error error() const {
    return make_error("store", "corrupt record at etcd key " + safe_text(key_, 512) + ": " + err_);
  }

  std::string str(const char* f) {
    const json* v = get(f);
    if (!v) return {};
    if (!v->is_string()) return fail(std::string(f) + " is not a string"), std::string();
    return v->get<std::string>();
  }
  int64_t i64(const char* f) {
    const json* v = get(f);
    if (!v) return 0;
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return fail(std::string(f) + " is out of range"), 0;
      return v->get<int64_t>();
    }
    return fail(std::string(f) + " is not an integer"), 0;
  }
  uint64_t u64(const char* f) {
    const json* v = get(f);
    if (!v) return 0;
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (v->is_number_integer() && v->get<int64_t>() >= 0) return static_cast<uint64_t>(v->get<int64_t>());
    return fail(std::string(f) + " is not a non-negative integer"), 0;
  }
  // A field a store written before it existed does not have: 0 then.
  uint64_t u64_or_zero(const char* f) {
    if (!ok() || !j_.contains(f)) return 0;
    return u64(f);
  }
  uint32_t u32(const char* f) {
    const uint64_t v = u64(f);
    if (v > std::numeric_limits<uint32_t>::max()) return fail(std::string(f) + " is out of range"), 0;
    return static_cast<uint32_t>(v);
  }
  bool boolean(const char* f) {
    const json* v = get(f);
    if (!v) return false;
    if (!v->is_boolean()) return fail(std::string(f) + " is not a boolean"), false;
    return v->get<bool>();
  }
  json any(const char* f) {
    const json* v = get(f);
    return v ? *v : json();
  }
  json object(const char* f) {
    json v = any(f);
    if (ok() && !v.is_object()) fail(std::string(f) + " is not an object");
    return v;
  }
  json array(const char* f) {
    json v = any(f);
    if (ok() && !v.is_array()) fail(std::string(f) + " is not an array");
    return v;
  }

 private:
  const json* get(const char* f) {
    if (!ok()) return nullptr;
    auto it = j_.find(f);
    if (it == j_.end()) {
      fail(std::string("field ") + f + " is missing");
      return nullptr;
    }
    return &*it;
  }
  void fail(std::string why) {
    if (err_.empty()) err_ = std::move(why);
  }

  const std::string& key_;
  json j_;
  std::string err_;
};

template <typename T>
Expected<T> done(const Fields& f, T v) {
  if (!f.ok()) return f.error();
  return v;
}

Error corrupt(const std::string& key, const std::string& why) {
  return make_error("store", "corrupt record at etcd key " + safe_text(key, 512) + ": " + why);
}

// A group's value: a JSON array of rows, each decoded by `one`; a single row (an object) is a
// group of one. At most kMaxGroupRows rows.
template <typename T, typename One>
Expected<std::vector<T>> decode_group(const std::string& key, const std::string& value, One one) {
  json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return corrupt(key, "not JSON");
  std::vector<T> out;
  if (j.is_object()) j = json::array({std::move(j)});
  if (!j.is_array() || j.empty()) return corrupt(key, "not a row or a non-empty array of rows");
  if (j.size() > kMaxGroupRows) return corrupt(key, "more than " + std::to_string(kMaxGroupRows) + " rows");
  out.reserve(j.size());
  for (auto& e : j) {
    Fields f(key, std::move(e));
    auto row = one(f);
    if (!f.ok()) return f.error();
    out.push_back(std::move(row));
  }
  return out;
}

json row_json(const OrderRecord& o) {
  return json{{"order_id", o.row.order_id},
              {"rollout_id", o.row.rollout_id},
              {"host_id", o.row.host_id},
              {"body", o.row.body},
              {"acked", o.row.acked},
              {"created_at", o.row.created_at},
              {"seq", o.seq}};
}

OrderRecord order_record(Fields& f) {
  OrderRecord o;
  o.row.order_id = f.str("order_id");
  o.row.rollout_id = f.u64("rollout_id");
  o.row.host_id = f.str("host_id");
  o.row.body = f.str("body");
  o.row.acked = f.boolean("acked");
  o.row.created_at = f.i64("created_at");
  o.seq = f.u64("seq");
  return o;
}

json row_json(const ResultRecord& r) {
  return json{{"rollout_id", r.row.rollout_id},
              {"host_id", r.row.host_id},
              {"order_id", r.row.order_id},
              {"outcome", r.row.outcome},
              {"running_version", r.row.running_version},
              {"message", r.row.message},
              {"timings", r.row.timings},
              {"at", r.row.at},
              {"seq", r.seq}};
}

ResultRecord result_record(Fields& f) {
  ResultRecord r;
  r.row.rollout_id = f.u64("rollout_id");
  r.row.host_id = f.str("host_id");
  r.row.order_id = f.str("order_id");
  r.row.outcome = f.str("outcome");
  r.row.running_version = f.str("running_version");
  r.row.message = f.str("message");
  r.row.timings = f.any("timings");
  r.row.at = f.i64("at");
  r.seq = f.u64("seq");
  return r;
}

json row_json(const TimelineRow& t) {
  return json{{"rollout_id", t.rollout_id}, {"host_id", t.host_id}, {"seq", t.seq},
              {"phase", t.phase},           {"at_ms", t.at_ms},     {"received_ms", t.received_ms}};
}

TimelineRow timeline_row(Fields& f) {
  TimelineRow t;
  t.rollout_id = f.u64("rollout_id");
  t.host_id = f.str("host_id");
  t.seq = f.u32("seq");
  t.phase = f.str("phase");
  t.at_ms = f.i64("at_ms");
  t.received_ms = f.i64("received_ms");
  return t;
}

json row_json(const EventRow& e) {
  return json{{"id", e.id}, {"rollout_id", e.rollout_id}, {"at", e.at}, {"message", e.message}};
}

EventRow event_row(Fields& f) {
  EventRow e;
  e.id = f.i64("id");
  e.rollout_id = f.u64("rollout_id");
  e.at = f.i64("at");
  e.message = f.str("message");
  return e;
}

template <typename T>
std::string encode_rows(const std::vector<T>& rows) {
  json a = json::array();
  for (const auto& r : rows) a.push_back(row_json(r));
  return a.dump();
}

}  // namespace

std::string encode(const Counters& c) {
  return json{{"rollout", c.rollout}, {"event", c.event}, {"audit", c.audit}, {"order", c.order},
              {"release", c.release}, {"epoch", c.epoch}, {"group", c.group}}
      .dump();
}

Expected<Counters> decode_counters(const std::string& key, const std::string& value) {
  Fields f(key, value);
  Counters c;
  c.rollout = f.u64("rollout");
  c.event = f.u64("event");
  c.audit = f.u64("audit");
  c.order = f.u64("order");
  c.release = f.u64("release");
  c.epoch = f.u64("epoch");
  c.group = f.u64_or_zero("group");
  return done(f, c);
}

std::string encode(const HostRow& h) {
  return json{{"host_id", h.host_id},
              {"labels", h.labels},
              {"services", h.services},
              {"first_seen", h.first_seen},
              {"last_seen", h.last_seen}}
      .dump();
}

Expected<HostRow> decode_host(const std::string& key, const std::string& value) {
  Fields f(key, value);
  HostRow h;
  h.host_id = f.str("host_id");
  h.labels = f.any("labels");
  h.services = f.any("services");
  h.first_seen = f.i64("first_seen");
  h.last_seen = f.i64("last_seen");
  return done(f, h);
}

std::string encode(const ReleaseRow& r) {
  return json{{"service", r.service},   {"version", r.version},    {"sha256", r.sha256},
              {"size", r.size},         {"path", r.path},          {"created_at", r.created_at},
              {"manifest", r.manifest}, {"signature", r.signature}}
      .dump();
}

Expected<ReleaseRow> decode_release(const std::string& key, const std::string& value) {
  Fields f(key, value);
  ReleaseRow r;
  r.service = f.str("service");
  r.version = f.str("version");
  r.sha256 = f.str("sha256");
  r.size = f.u64("size");
  r.path = f.str("path");
  r.created_at = f.i64("created_at");
  r.manifest = f.str("manifest");
  r.signature = f.str("signature");
  return done(f, r);
}

std::string encode(const RolloutRow& r) {
  return json{{"id", r.id},
              {"service", r.service},
              {"version", r.version},
              {"kind", r.kind},
              {"phase", r.phase},
              {"created_by", r.created_by},
              {"reason", r.reason},
              {"created_at", r.created_at},
              {"finished_at", r.finished_at},
              {"revision", r.revision},
              {"state", r.state}}
      .dump();
}

Expected<RolloutRow> decode_rollout(const std::string& key, const std::string& value) {
  Fields f(key, value);
  RolloutRow r;
  r.id = f.u64("id");
  r.service = f.str("service");
  r.version = f.str("version");
  r.kind = f.str("kind");
  r.phase = f.str("phase");
  r.created_by = f.str("created_by");
  r.reason = f.str("reason");
  r.created_at = f.i64("created_at");
  r.finished_at = f.i64("finished_at");
  r.revision = f.i64("revision");
  r.state = f.any("state");
  return done(f, r);
}

std::string encode(const std::vector<OrderRecord>& rows) { return encode_rows(rows); }

Expected<std::vector<OrderRecord>> decode_order_group(const std::string& key, const std::string& value) {
  return decode_group<OrderRecord>(key, value, order_record);
}

std::string encode(const std::vector<ResultRecord>& rows) { return encode_rows(rows); }

Expected<std::vector<ResultRecord>> decode_result_group(const std::string& key, const std::string& value) {
  return decode_group<ResultRecord>(key, value, result_record);
}

std::string encode(const std::vector<TimelineRow>& rows) { return encode_rows(rows); }

Expected<std::vector<TimelineRow>> decode_timeline_group(const std::string& key, const std::string& value) {
  return decode_group<TimelineRow>(key, value, timeline_row);
}

std::string encode(const std::vector<EventRow>& rows) { return encode_rows(rows); }

Expected<std::vector<EventRow>> decode_event_group(const std::string& key, const std::string& value) {
  return decode_group<EventRow>(key, value, event_row);
}

std::string encode(const AuditRow& a) {
  return json{{"id", a.id},           {"at", a.at},         {"who", a.who},
              {"command", a.command}, {"target", a.target}, {"decision", a.decision}}
      .dump();
}

Expected<AuditRow> decode_audit(const std::string& key, const std::string& value) {
  Fields f(key, value);
  AuditRow a;
  a.id = f.i64("id");
  a.at = f.i64("at");
  a.who = f.str("who");
  a.command = f.str("command");
  a.target = f.str("target");
  a.decision = f.str("decision");
  return done(f, a);
}

std::string encode(const DesiredRow& d) {
  return json{{"service", d.service},   {"version", d.version}, {"selector", d.selector},
              {"converge", d.converge}, {"plan", d.plan},       {"rollout_id", d.rollout_id},
              {"held", d.held},         {"note", d.note},       {"updated_at", d.updated_at}}
      .dump();
}

Expected<DesiredRow> decode_desired(const std::string& key, const std::string& value) {
  Fields f(key, value);
  DesiredRow d;
  d.service = f.str("service");
  d.version = f.str("version");
  d.selector = f.str("selector");
  d.converge = f.str("converge");
  d.plan = f.any("plan");
  if (!d.plan.is_object()) d.plan = json::object();
  d.rollout_id = f.u64("rollout_id");
  d.held = f.boolean("held");
  d.note = f.str("note");
  d.updated_at = f.i64("updated_at");
  return done(f, d);
}

std::string encode(const AgentKeyRow& k) {
  return json{{"key", k.key},
              {"host_id", k.host_id},
              {"state", k.state},
              {"first_seen", k.first_seen},
              {"updated_at", k.updated_at},
              {"updated_by", k.updated_by}}
      .dump();
}

Expected<AgentKeyRow> decode_agent_key(const std::string& key, const std::string& value) {
  Fields f(key, value);
  AgentKeyRow k;
  k.key = f.str("key");
  k.host_id = f.str("host_id");
  k.state = f.str("state");
  k.first_seen = f.i64("first_seen");
  k.updated_at = f.i64("updated_at");
  k.updated_by = f.str("updated_by");
  return done(f, k);
}

std::string encode(const OperatorKeyRow& k) {
  return json{{"key", k.key},
              {"name", k.name},
              {"role", k.role},
              {"state", k.state},
              {"created_at", k.created_at},
              {"updated_by", k.updated_by}}
      .dump();
}

Expected<OperatorKeyRow> decode_operator_key(const std::string& key, const std::string& value) {
  Fields f(key, value);
  OperatorKeyRow k;
  k.key = f.str("key");
  k.name = f.str("name");
  k.role = f.str("role");
  k.state = f.str("state");
  k.created_at = f.i64("created_at");
  k.updated_by = f.str("updated_by");
  return done(f, k);
}

std::string encode_slot_plan(const std::vector<std::string>& slot_texts) {
  std::string out = "[";
  for (const auto& t : slot_texts) {
    if (out.size() > 1) out += ',';
    out += t;
  }
  return out + "]";
}

Expected<std::vector<nlohmann::json>> decode_slot_plan(const std::string& key, const std::string& value) {
  json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array() || j.empty()) return corrupt(key, "a slot plan is not a non-empty JSON array");
  if (j.size() > kMaxGroupRows) return corrupt(key, "more than " + std::to_string(kMaxGroupRows) + " slots");
  std::vector<nlohmann::json> out;
  out.reserve(j.size());
  for (auto& e : j) out.push_back(std::move(e));
  return out;
}

Expected<nlohmann::json> decode_slot(const std::string& key, const std::string& value) {
  auto j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return make_error("store", "corrupt record at etcd key " + safe_text(key, 512) + ": a host slot is not JSON");
  return j;
}

}  // namespace gantry::store::etcd_codec
