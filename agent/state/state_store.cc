#include "agent/state/state_store.h"

#include <nlohmann/json.hpp>

#include "common/util/fs.h"
#include "common/util/names.h"

namespace gantry::agent {
namespace {

using nlohmann::json;

struct Corrupt : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string name_or_empty(const json& j, const char* k) {
  std::string v = j.at(k).get<std::string>();
  if (!v.empty() && !is_safe_name(v)) throw Corrupt(std::string("bad name in field ") + k);
  return v;
}

std::string name(const json& j, const char* k) {
  std::string v = name_or_empty(j, k);
  if (v.empty()) throw Corrupt(std::string("empty field ") + k);
  return v;
}

json order_json(const proto::Order& o) {
  json j = {{"order_id", o.order_id}, {"rollout_id", o.rollout_id}, {"service", o.service},
            {"kind", o.kind},         {"version", o.version},       {"sha256", o.sha256},
            {"size", o.size},         {"min_healthy_ms", o.min_healthy_ms},
            {"healthy_deadline_ms", o.healthy_deadline_ms}};
  // The signed manifest travels with the order, so a resumed order is checked again.
  if (!o.manifest.empty()) j["manifest"] = o.manifest;
  if (!o.signature.empty()) j["signature"] = o.signature;
  return j;
}

proto::Order order_from(const json& j) {
  proto::Order o;
  o.order_id = name(j, "order_id");
  o.rollout_id = j.at("rollout_id").get<uint64_t>();
  o.service = name(j, "service");
  o.kind = j.at("kind").get<std::string>();
  if (o.kind != "update" && o.kind != "rollback") throw Corrupt("bad order kind");
  o.version = name(j, "version");
  o.sha256 = j.at("sha256").get<std::string>();
  if (!is_sha256_hex(o.sha256)) throw Corrupt("bad sha256");
  o.size = j.at("size").get<uint64_t>();
  o.min_healthy_ms = j.at("min_healthy_ms").get<uint32_t>();
  o.healthy_deadline_ms = j.at("healthy_deadline_ms").get<uint32_t>();
  o.manifest = j.value("manifest", std::string());
  o.signature = j.value("signature", std::string());
  return o;
}

json report_json(const proto::Report& r) {
  return {{"order_id", r.order_id},   {"rollout_id", r.rollout_id},
          {"service", r.service},     {"outcome", r.outcome},
          {"running_version", r.running_version}, {"message", r.message},
          {"timings_ms", r.timings_ms}};
}

proto::Report report_from(const json& j) {
  proto::Report r;
  r.order_id = name(j, "order_id");
  r.rollout_id = j.at("rollout_id").get<uint64_t>();
  r.service = name(j, "service");
  r.outcome = j.at("outcome").get<std::string>();
  if (r.outcome != "succeeded" && r.outcome != "failed" && r.outcome != "failed_reverted") throw Corrupt("bad outcome");
  r.running_version = name_or_empty(j, "running_version");
  r.message = j.at("message").get<std::string>();
  r.timings_ms = j.at("timings_ms").get<std::map<std::string, uint64_t>>();
  return r;
}

bool known_phase(const std::string& p) {
  for (const char* k : {phase::kFetching, phase::kStaging, phase::kSwapping, phase::kRestarting,
                        phase::kVerifying, phase::kReverting})
    if (p == k) return true;
  return false;
}

}  // namespace

void AgentState::add_result(const proto::Report& r) {
  for (auto it = results.begin(); it != results.end(); ++it) {
    if (it->order_id == r.order_id) {
      results.erase(it);
      break;
    }
  }
  results.push_back(r);
  while (results.size() > kMaxResults) results.pop_front();
}

const proto::Report* AgentState::find_result(const std::string& order_id) const {
  for (const auto& r : results)
    if (r.order_id == order_id) return &r;
  return nullptr;
}

std::string serialize_state(const AgentState& s) {
  json j;
  j["schema"] = AgentState::kSchema;
  json svcs = json::object();
  for (const auto& [n, rec] : s.services) svcs[n] = {{"current", rec.current}, {"previous", rec.previous}};
  j["services"] = svcs;
  if (s.active) {
    const auto& a = *s.active;
    j["active"] = {{"order", order_json(a.order)},   {"phase", a.phase},
                   {"from_version", a.from_version}, {"failure", a.failure},
                   {"started_wall_ms", a.started_wall_ms}, {"timings_ms", a.timings_ms}};
  } else {
    j["active"] = nullptr;
  }
  j["queue"] = json::array();
  for (const auto& o : s.queue) j["queue"].push_back(order_json(o));
  j["results"] = json::array();
  for (const auto& r : s.results) j["results"].push_back(report_json(r));
  return j.dump(2) + "\n";
}

Expected<AgentState> parse_state(const std::string& text) {
  try {
    json j = json::parse(text);
    int schema = j.at("schema").get<int>();
    // Upgrades from older schemas go here; a newer schema is refused rather than misread.
    if (schema != AgentState::kSchema) return make_error("corrupt", "unsupported journal schema " + std::to_string(schema));
    AgentState s;
    for (const auto& [n, rec] : j.at("services").items()) {
      if (!is_safe_name(n)) throw Corrupt("bad service name");
      s.services[n] = ServiceRecord{name_or_empty(rec, "current"), name_or_empty(rec, "previous")};
    }
    if (!j.at("active").is_null()) {
      const auto& a = j.at("active");
      ActiveOrder ao;
      ao.order = order_from(a.at("order"));
      ao.phase = a.at("phase").get<std::string>();
      if (!known_phase(ao.phase)) throw Corrupt("bad phase");
      ao.from_version = name_or_empty(a, "from_version");
      ao.failure = a.at("failure").get<std::string>();
      ao.started_wall_ms = a.at("started_wall_ms").get<int64_t>();
      ao.timings_ms = a.at("timings_ms").get<std::map<std::string, uint64_t>>();
      s.active = std::move(ao);
    }
    for (const auto& o : j.at("queue")) s.queue.push_back(order_from(o));
    for (const auto& r : j.at("results")) s.results.push_back(report_from(r));
    while (s.results.size() > AgentState::kMaxResults) s.results.pop_front();
    return s;
  } catch (const std::exception& e) {
    return make_error("corrupt", std::string("journal is corrupt: ") + e.what());
  }
}

FileStateStore::FileStateStore(std::string state_dir) : dir_(std::move(state_dir)), path_(dir_ + "/agent-state.json") {}

Expected<AgentState> FileStateStore::load() {
  auto text = fs::read_file(path_, 16 * 1024 * 1024);
  if (!text) {
    if (text.error().code == "not_found") return AgentState{};
    return text.error();
  }
  return parse_state(*text);
}

Status FileStateStore::save(const AgentState& s) {
  if (Status st = fs::make_dirs(dir_, 0700); !st.ok()) return st;
  return fs::write_file_atomic(path_, serialize_state(s), 0600);
}

Expected<AgentState> MemoryStateStore::load() {
  std::lock_guard lk(mu_);
  if (text_.empty()) return AgentState{};
  return parse_state(text_);
}

Status MemoryStateStore::save(const AgentState& s) {
  std::lock_guard lk(mu_);
  if (fail_ > 0 && fail_after_ > 0) {
    --fail_after_;
  } else if (fail_ > 0) {
    --fail_;
    return err_;
  }
  text_ = serialize_state(s);
  ++saves_;
  return Status::Ok();
}

void MemoryStateStore::fail_next(int n, Error err, int after) {
  std::lock_guard lk(mu_);
  fail_ = n;
  fail_after_ = after;
  err_ = std::move(err);
}

int MemoryStateStore::saves() const {
  std::lock_guard lk(mu_);
  return saves_;
}

std::string MemoryStateStore::text() const {
  std::lock_guard lk(mu_);
  return text_;
}

}  // namespace gantry::agent
