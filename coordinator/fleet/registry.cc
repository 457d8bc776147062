#include "coordinator/fleet/registry.h"

#include <algorithm>

namespace gantry::fleet {

void Registry::restore(HostRecord h) {
  std::string identity = h.identity;
  auto& rec = hosts_[h.host_id];
  rec = std::move(h);
  by_identity_[identity] = &rec;
}

bool Registry::on_hello(const proto::Hello& h, const std::string& identity, Millis now, Millis wall) {
  auto& rec = hosts_[h.host_id];
  bool was_offline = !rec.online || !rec.said_hello;
  if (!rec.identity.empty() && rec.identity != identity) by_identity_.erase(rec.identity);
  rec.host_id = h.host_id;
  rec.identity = identity;
  rec.agent_version = h.agent_version;
  rec.labels = h.labels;
  std::map<std::string, ServiceView> svcs;
  for (const auto& s : h.services) {
    ServiceView v;
    v.current_version = s.current_version;
    v.previous_version = s.previous_version;
    v.state = s.state;
    v.order_id = s.order_id;
    svcs[s.name] = v;
  }
  rec.services = std::move(svcs);
  rec.online = true;
  rec.said_hello = true;
  rec.coordinator_heartbeat = (h.capabilities & proto::kCapCoordinatorHeartbeat) != 0;
  rec.last_seen = now;
  rec.last_seen_wall = wall;
  if (rec.first_seen_wall == 0) rec.first_seen_wall = wall;
  by_identity_[identity] = &rec;
  return was_offline;
}

HostRecord* Registry::touch(const std::string& identity, Millis now, Millis wall) {
  HostRecord* h = by_identity(identity);
  if (!h || !h->said_hello) return nullptr;
  h->last_seen = now;
  h->last_seen_wall = wall;
  h->online = true;
  return h;
}

std::vector<std::string> Registry::expire(Millis now, Millis timeout, Millis* next_check) {
  std::vector<std::string> lost;
  Millis next = now + timeout + 1;
  for (auto& [id, h] : hosts_) {
    if (!h.online) continue;
    if (now < h.grace_until) {
      next = std::min(next, h.grace_until);
      continue;
    }
    if (now - h.last_seen > timeout) {
      h.online = false;
      h.said_hello = false;
      h.udp_confirmed = false;
      lost.push_back(id);
    } else {
      next = std::min(next, h.last_seen + timeout + 1);
    }
  }
  if (next_check) *next_check = next;
  return lost;
}

void Registry::open_udp_session(HostRecord& h, uint32_t session, std::string key) {
  close_udp_session(h);
  h.udp_session = session;
  h.udp_key = std::move(key);
  by_udp_session_[session] = &h;
}

void Registry::close_udp_session(HostRecord& h) {
  if (h.udp_session != 0) by_udp_session_.erase(h.udp_session);
  h.udp_session = 0;
  h.udp_key.clear();
  h.udp_last_seq = 0;
  h.udp_confirmed = false;
}

HostRecord* Registry::by_udp_session(uint32_t session) {
  auto it = by_udp_session_.find(session);
  return it == by_udp_session_.end() ? nullptr : it->second;
}

std::vector<HostRecord*> Registry::udp_quiet(Millis now, Millis quiet, Millis* next_check) {
  std::vector<HostRecord*> out;
  for (auto& [session, h] : by_udp_session_) {
    if (!h->udp_confirmed || !h->online) continue;
    if (now - h->last_seen > quiet) {
      h->udp_confirmed = false;
      out.push_back(h);
    } else if (next_check) {
      *next_check = std::min(*next_check, h->last_seen + quiet + 1);
    }
  }
  return out;
}

HostRecord* Registry::by_identity(const std::string& identity) {
  auto it = by_identity_.find(identity);
  return it == by_identity_.end() ? nullptr : it->second;
}

HostRecord* Registry::find(const std::string& host_id) {
  auto it = hosts_.find(host_id);
  return it == hosts_.end() ? nullptr : &it->second;
}

nlohmann::json Registry::host_json(const HostRecord& h, Millis wall_now) {
  nlohmann::json svcs = nlohmann::json::array();
  for (const auto& [name, s] : h.services) {
    svcs.push_back({{"name", name},
                    {"current_version", s.current_version},
                    {"previous_version", s.previous_version},
                    {"state", s.state},
                    {"order_id", s.order_id},
                    {"phase", s.phase}});
  }
  return {{"host_id", h.host_id},
          {"state", h.online ? "online" : "unknown"},
          {"online", h.online},
          {"labels", h.labels},
          {"agent_version", h.agent_version},
          {"last_seen_ms_ago", h.last_seen_wall ? wall_now - h.last_seen_wall : -1},
          {"services", svcs}};
}

nlohmann::json Registry::to_json(Millis wall_now) const {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& [id, h] : hosts_) arr.push_back(host_json(h, wall_now));
  return arr;
}

}  // namespace gantry::fleet
