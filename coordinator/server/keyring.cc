#include "coordinator/server/keyring.h"

#include "common/security/keys.h"
#include "common/util/log.h"
#include "common/util/names.h"
#include "common/util/text.h"

namespace gantry::coordinator {
namespace {

auto L() { return log::get("auth"); }

std::string short_key(const std::string& k) { return k.substr(0, 8) + "…"; }

}  // namespace

std::optional<Role> parse_role(const std::string& s) {
  if (s == "viewer") return Role::kViewer;
  if (s == "deployer") return Role::kDeployer;
  if (s == "admin") return Role::kAdmin;
  return std::nullopt;
}

const char* role_name(Role r) {
  switch (r) {
    case Role::kViewer:
      return "viewer";
    case Role::kDeployer:
      return "deployer";
    case Role::kAdmin:
      return "admin";
    case Role::kPeer:
      return "peer";
  }
  return "viewer";
}

KeyRing::KeyRing(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

Status KeyRing::load() {
  auto a = store_.agent_keys();
  if (!a) return a.error();
  auto o = store_.operator_keys();
  if (!o) return o.error();
  agents_.clear();
  ops_.clear();
  for (auto& r : *a) agents_[r.key] = r;
  for (auto& r : *o) ops_[r.key] = r;
  return Status::Ok();
}

Status KeyRing::save(const std::vector<store::AgentKeyRow>& rows) {
  if (Status s = store_.put_agent_keys(rows); !s.ok()) return s;
  for (const auto& r : rows) agents_[r.key] = r;
  return Status::Ok();
}

Status KeyRing::bootstrap_agent(const std::string& host, const std::string& key) {
  auto it = agents_.find(key);
  if (it != agents_.end() && it->second.state == "accepted" && it->second.host_id == host) return Status::Ok();
  if (it != agents_.end() && (it->second.state == "revoked" || it->second.state == "rejected"))
    return make_error("revoked", "--accept-agent-key " + host + "=" + short_key(key) + " refused: that key was " +
                                     it->second.state + " by " + it->second.updated_by +
                                     "; a start-up flag never undoes that (remove the flag, or accept the key "
                                     "explicitly: gantry keys accept " +
                                     key + " --host " + host + ")");
  auto ch = accept(key, host, "bootstrap (--accept-agent-key)");
  if (!ch) return ch.error();
  return Status::Ok();
}

Status KeyRing::bootstrap_operator(const std::string& name, const std::string& key, Role role) {
  auto it = ops_.find(key);
  if (it != ops_.end() && it->second.state == "active" && it->second.name == name && it->second.role == role_name(role))
    return Status::Ok();
  if (it != ops_.end() && it->second.state == "revoked")
    return make_error("revoked", "--admin-key " + name + "=" + short_key(key) + " refused: that key was revoked by " +
                                     it->second.updated_by +
                                     "; a start-up flag never undoes that (remove the flag, or add the key again "
                                     "explicitly: gantry keys add-operator)");
  auto ch = add_operator(name, key, role, "bootstrap (--admin-key)");
  if (!ch) return ch.error();
  return Status::Ok();
}

ZapDecision KeyRing::zap(const std::string& domain, const std::string& key, const std::string& address) {
  ZapDecision d;
  d.user_id = key;
  if (domain == kZapDomainOperators) {
    if (is_peer(key)) {
      d.allow = true;
      d.reason = "peer coordinator (the server key)";
      return d;
    }
    auto it = ops_.find(key);
    if (it != ops_.end() && it->second.state == "active") {
      d.allow = true;
      d.reason = "operator " + it->second.name;
    } else {
      d.reason =
          it == ops_.end() ? "unknown operator key" : "operator key " + it->second.name + " is " + it->second.state;
    }
    return d;
  }
  auto it = agents_.find(key);
  if (domain == kZapDomainPub) {
    d.allow = it != agents_.end() && it->second.state == "accepted";
    d.reason = d.allow ? "agent " + it->second.host_id
                       : (it == agents_.end() ? "unknown agent key" : "agent key is " + it->second.state);
    return d;
  }
  if (domain != kZapDomainAgents) {
    d.reason = "unknown ZAP domain";
    return d;
  }
  // Only an accepted key completes the handshake. libzmq holds every frame of a message until
  // its last one arrives, so a peer past the handshake could make it buffer without bound (one
  // message of endless frames): a key nobody accepted must never get that far.
  if (it != agents_.end()) {
    const auto& st = it->second.state;
    d.allow = st == "accepted";
    d.reason = "agent key " + (it->second.host_id.empty() ? short_key(key) : it->second.host_id) + " is " + st;
    if (st == "pending") d.reason += " (gantry keys accept " + key + " --host HOST)";
    return d;
  }
  size_t pending = 0;
  for (const auto& [k, r] : agents_) pending += r.state == "pending";
  if (pending >= kMaxPending) {
    d.reason =
        "too many pending agent keys (" + std::to_string(pending) + "); refusing new ones until an operator decides";
    return d;
  }
  Millis now = clock_.wall_ms();
  // The address is libzmq's text of the peer's IP address (never the peer's own words).
  const std::string from = address.empty() ? "handshake" : "handshake from " + safe_text(address.substr(0, 64));
  store::AgentKeyRow row{key, "", "pending", now, now, from};
  if (Status s = save({row}); !s.ok()) {
    d.reason = "cannot record pending key: " + s.error().message;
    return d;
  }
  L()->warn(
      "unknown agent key {} connected ({}); recorded as pending and refused until an operator accepts it: "
      "gantry keys accept {} --host HOST",
      key, from, key);
  d.reason = "new pending agent key (gantry keys accept " + key + " --host HOST)";
  return d;
}

AgentStanding KeyRing::agent(const std::string& key) const {
  AgentStanding s;
  auto it = agents_.find(key);
  if (it == agents_.end()) {
    s.state = "unknown";
    return s;
  }
  s.state = it->second.state;
  s.host_id = it->second.host_id;
  if (s.state == "accepted")
    s.kind = AgentStanding::kAccepted;
  else if (s.state == "pending")
    s.kind = AgentStanding::kPending;
  return s;
}

const store::OperatorKeyRow* KeyRing::op(const std::string& key) const {
  auto it = ops_.find(key);
  if (it == ops_.end() || it->second.state != "active") return nullptr;
  return &it->second;
}

Expected<store::AgentKeyRow*> KeyRing::find_agent(const std::string& target, const std::vector<std::string>& states) {
  auto wanted = [&](const std::string& st) {
    for (const auto& s : states)
      if (s == st) return true;
    return states.empty();
  };
  auto it = agents_.find(target);
  if (it != agents_.end()) {
    if (!wanted(it->second.state)) return make_error("state", "agent key " + target + " is " + it->second.state);
    return &it->second;
  }
  std::vector<store::AgentKeyRow*> hits;
  for (auto& [k, r] : agents_)
    if (r.host_id == target && wanted(r.state)) hits.push_back(&r);
  if (hits.size() == 1) return hits[0];
  if (hits.empty()) return make_error("not_found", "no agent key matches '" + target.substr(0, 64) + "'");
  std::string keys;
  for (auto* h : hits) keys += " " + h->key;
  return make_error("ambiguous", "several keys match host " + target + "; name one by key:" + keys);
}

Expected<KeyChange> KeyRing::accept(const std::string& target, const std::string& host, const std::string& by) {
  Millis now = clock_.wall_ms();
  store::AgentKeyRow row;
  auto found = find_agent(target, {"pending"});
  const bool by_key = security::is_z85_key(target);
  if (found && !by_key) {
    // By host name, the name is only the pending key's claim: anyone holding a fresh key can
    // make it. It is not enough when the name already belongs to an accepted key. (Pending keys
    // name no host now that ZAP refuses them before any hello; rows an older coordinator wrote
    // may still carry a claim.)
    for (const auto& [k, r] : agents_)
      if (r.host_id == target && r.state == "accepted")
        return make_error("owned", "host " + target + " already has an accepted key (" + short_key(k) +
                                       "); a pending key that claims its name is accepted only by key, after checking "
                                       "it on the host: gantry keys accept " +
                                       (*found)->key + " --host " + target);
  }
  if (found) {
    row = **found;
  } else if (security::is_z85_key(target)) {
    auto it = agents_.find(target);
    // Pre-enrolment by key, or re-accepting a rejected/revoked key: both explicit by key.
    row = it != agents_.end() ? it->second : store::AgentKeyRow{target, "", "pending", now, now, by};
  } else if (found.error().code == "not_found") {
    return make_error("not_found", "no agent key matches '" + safe_text(target.substr(0, 64)) +
                                       "'; a pending key names no host (it is refused at the handshake until "
                                       "accepted): accept it by key, after checking it against the host's agent.pub: "
                                       "gantry keys accept KEY --host " +
                                       (is_safe_name(target) ? target : std::string("HOST")));
  } else {
    return found.error();
  }
  if (!host.empty()) row.host_id = host;
  if (row.host_id.empty())
    return make_error("usage", "the key has not said which host it is; name it: gantry keys accept KEY --host HOST");
  if (!is_safe_name(row.host_id))
    return make_error("usage", "host id '" + row.host_id.substr(0, 64) + "' is not a safe name");
  KeyChange ch;
  // One key per host: accepting a new key retires the old one.
  for (const auto& [k, r] : agents_) {
    if (k != row.key && r.host_id == row.host_id && r.state == "accepted") {
      store::AgentKeyRow old = r;
      old.state = "revoked";
      old.updated_at = now;
      old.updated_by = by + " (replaced by a new key)";
      ch.agents.push_back(old);
      ch.hosts_to_disconnect.push_back(old.host_id);
    }
  }
  row.state = "accepted";
  row.updated_at = now;
  row.updated_by = by;
  ch.agents.push_back(row);
  if (Status s = save(ch.agents); !s.ok()) return s.error();
  ch.summary = "accepted key " + row.key + " for host " + row.host_id;
  if (ch.agents.size() > 1) ch.summary += " (its previous key is revoked)";
  L()->info("{}: {}", by, ch.summary);
  return ch;
}

Expected<KeyChange> KeyRing::accept_many(const std::vector<std::pair<std::string, std::string>>& host_keys,
                                         const std::string& by) {
  Millis now = clock_.wall_ms();
  // Accepted keys by host, built once: the one-key-per-host rule below is then O(entries)
  // instead of a scan of every key per entry.
  std::map<std::string, std::vector<std::string>> accepted_by_host;
  for (const auto& [k, r] : agents_)
    if (r.state == "accepted") accepted_by_host[r.host_id].push_back(k);
  std::map<std::string, std::string> key_of_host;  // within this request
  std::map<std::string, std::string> host_of_key;
  for (const auto& [host, key] : host_keys) {
    if (!security::is_z85_key(key))
      return make_error("usage", "not a Z85 CURVE public key: '" + key.substr(0, 64) + "'");
    if (!is_safe_name(host)) return make_error("usage", "host id '" + host.substr(0, 64) + "' is not a safe name");
    if (auto k = key_of_host.find(host); k != key_of_host.end() && k->second != key)
      return make_error("usage", "host " + host + " is named twice with different keys");
    if (auto h = host_of_key.find(key); h != host_of_key.end() && h->second != host)
      return make_error("usage", "key " + key + " is named for two hosts (" + h->second + ", " + host + ")");
    key_of_host[host] = key;
    host_of_key[key] = host;
  }
  KeyChange ch;
  size_t replaced = 0, unchanged = 0;
  for (const auto& [host, key] : key_of_host) {
    auto it = agents_.find(key);
    if (it != agents_.end() && it->second.state == "accepted" && it->second.host_id == host) {
      unchanged++;
      continue;
    }
    for (const auto& old_key : accepted_by_host[host]) {
      if (old_key == key) continue;
      store::AgentKeyRow old = agents_.at(old_key);
      old.state = "revoked";
      old.updated_at = now;
      old.updated_by = by + " (replaced by a new key)";
      ch.agents.push_back(old);
      ch.hosts_to_disconnect.push_back(old.host_id);
      replaced++;
    }
    store::AgentKeyRow row = it != agents_.end() ? it->second : store::AgentKeyRow{key, host, "pending", now, now, by};
    row.host_id = host;
    row.state = "accepted";
    row.updated_at = now;
    row.updated_by = by;
    ch.agents.push_back(row);
  }
  if (!ch.agents.empty())
    if (Status s = save(ch.agents); !s.ok()) return s.error();
  ch.summary = "accepted " + std::to_string(key_of_host.size() - unchanged) + " agent key(s)" +
               (unchanged ? ", " + std::to_string(unchanged) + " already accepted" : "") +
               (replaced ? ", revoked " + std::to_string(replaced) + " previous key(s)" : "");
  L()->info("{}: {}", by, ch.summary);
  return ch;
}

Expected<KeyChange> KeyRing::reject(const std::string& target, const std::string& by) {
  auto found = find_agent(target, {"pending", "accepted"});
  if (!found) return found.error();
  store::AgentKeyRow row = **found;
  const bool was_accepted = row.state == "accepted";
  row.state = "rejected";
  row.updated_at = clock_.wall_ms();
  row.updated_by = by;
  if (Status s = save({row}); !s.ok()) return s.error();
  KeyChange ch;
  ch.agents.push_back(row);
  if (was_accepted && !row.host_id.empty()) ch.hosts_to_disconnect.push_back(row.host_id);
  ch.summary = "rejected key " + row.key + (row.host_id.empty() ? "" : " (host " + row.host_id + ")");
  L()->info("{}: {}", by, ch.summary);
  return ch;
}

Expected<KeyChange> KeyRing::revoke(const std::string& target, const std::string& by) {
  auto found = find_agent(target, {"accepted", "pending"});
  KeyChange ch;
  if (found) {
    store::AgentKeyRow row = **found;
    const bool was_accepted = row.state == "accepted";
    row.state = "revoked";
    row.updated_at = clock_.wall_ms();
    row.updated_by = by;
    if (Status s = save({row}); !s.ok()) return s.error();
    ch.agents.push_back(row);
    if (was_accepted && !row.host_id.empty()) ch.hosts_to_disconnect.push_back(row.host_id);
    ch.summary = "revoked agent key " + row.key + (row.host_id.empty() ? "" : " (host " + row.host_id + ")");
  } else {
    store::OperatorKeyRow* hit = nullptr;
    for (auto& [k, r] : ops_)
      if ((k == target || r.name == target) && r.state == "active") hit = &r;
    if (!hit)
      return found.error().code == "ambiguous"
                 ? found.error()
                 : make_error("not_found",
                              "no accepted agent key or active operator matches '" + target.substr(0, 64) + "'");
    store::OperatorKeyRow row = *hit;
    row.state = "revoked";
    row.updated_by = by;
    if (Status s = store_.put_operator_keys({row}); !s.ok()) return s.error();
    ops_[row.key] = row;
    ch.op = row;
    ch.summary = "revoked operator key " + row.key + " (" + row.name + ", " + row.role + ")";
  }
  L()->info("{}: {}", by, ch.summary);
  return ch;
}

Expected<KeyChange> KeyRing::add_operator(const std::string& name, const std::string& key, Role role,
                                          const std::string& by) {
  if (!is_safe_name(name)) return make_error("usage", "operator name '" + name.substr(0, 64) + "' is not a safe name");
  if (!security::is_z85_key(key)) return make_error("usage", "not a Z85 CURVE public key");
  for (const auto& [k, r] : ops_) {
    if (k != key && r.name == name && r.state == "active")
      return make_error("exists", "an active operator named " + name + " has another key; revoke it first");
  }
  store::OperatorKeyRow row{key, name, role_name(role), "active", clock_.wall_ms(), by};
  if (Status s = store_.put_operator_keys({row}); !s.ok()) return s.error();
  ops_[key] = row;
  KeyChange ch;
  ch.op = row;
  ch.summary = "operator " + name + " (" + role_name(role) + ") may use key " + key;
  L()->info("{}: {}", by, ch.summary);
  return ch;
}

nlohmann::json KeyRing::to_json() const {
  nlohmann::json agents = nlohmann::json::array(), ops = nlohmann::json::array();
  for (const auto& [k, r] : agents_)
    agents.push_back({{"key", r.key},
                      {"host_id", r.host_id},
                      {"state", r.state},
                      {"first_seen", r.first_seen},
                      {"updated_at", r.updated_at},
                      {"updated_by", r.updated_by}});
  for (const auto& [k, r] : ops_)
    ops.push_back({{"key", r.key},
                   {"name", r.name},
                   {"role", r.role},
                   {"state", r.state},
                   {"created_at", r.created_at},
                   {"updated_by", r.updated_by}});
  return {{"agents", agents}, {"operators", ops}};
}

bool KeyRing::has_admin() const {
  for (const auto& [k, r] : ops_)
    if (r.state == "active" && r.role == "admin") return true;
  return false;
}

}  // namespace gantry::coordinator
