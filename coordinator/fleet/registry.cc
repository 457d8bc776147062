#include "coordinator/fleet/registry.h"

#include <algorithm>

namespace gantry::fleet {

HostRecord& Registry::record(const std::string& host_id) {
  auto [it, fresh] = hosts_.try_emplace(host_id);
  if (fresh) all_.push_back(&it->second);
  return it->second;
}

void Registry::restore(HostRecord h) {
  std::string identity = h.identity;
  auto& rec = record(h.host_id);
  rec = std::move(h);
  by_identity_[identity] = &rec;
}

bool Registry::on_hello(const proto::Hello& h, const std::string& identity, Millis now, Millis wall) {
  auto& rec = record(h.host_id);
  bool was_offline = !rec.online || !rec.said_hello;
  if (!rec.identity.empty() && rec.identity != identity) by_identity_.erase(rec.identity);
  rec.host_id = h.host_id;
  ++rec.hellos;
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
  rec.signal_channel.clear();  // a new connection: its agent says again (a heartbeat after the Welcome)
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
  for (HostRecord* hp : all_) {
    HostRecord& h = *hp;
    if (!h.online) continue;
    if (now < h.grace_until) {
      next = std::min(next, h.grace_until);
      continue;
    }
    if (now - h.last_seen > timeout) {
      h.online = false;
      h.said_hello = false;
      if (auto* slot = udp_slot(h.udp_session)) slot->confirmed = false;
      lost.push_back(h.host_id);
    } else {
      next = std::min(next, h.last_seen + timeout + 1);
    }
  }
  if (next_check) *next_check = next;
  return lost;
}

namespace {
constexpr uint32_t kSlotBits = 20;
constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;
}  // namespace

UdpSlot* Registry::open_udp_session(HostRecord& h, const std::string& key, Millis now) {
  close_udp_session(h);
  if (key.size() != UdpSlot{}.key.size()) return nullptr;
  uint32_t idx;
  if (!udp_free_.empty()) {
    idx = udp_free_.back();
    udp_free_.pop_back();
  } else {
    if (udp_slots_.size() >= kSlotMask) return nullptr;
    idx = static_cast<uint32_t>(udp_slots_.size());
    udp_slots_.emplace_back();
  }
  udp_generation_ = (udp_generation_ + 1) & ((1u << (32 - kSlotBits)) - 1);
  UdpSlot& slot = udp_slots_[idx];
  slot = UdpSlot{};
  slot.session = (udp_generation_ << kSlotBits) | (idx + 1);
  slot.last_datagram = now;
  std::copy(key.begin(), key.end(), slot.key.begin());
  slot.host = &h;
  h.udp_session = slot.session;
  return &slot;
}

void Registry::close_udp_session(HostRecord& h) {
  if (UdpSlot* slot = udp_slot(h.udp_session)) {
    *slot = UdpSlot{};
    udp_free_.push_back(static_cast<uint32_t>(slot - udp_slots_.data()));
  }
  h.udp_session = 0;
}

UdpSlot* Registry::udp_slot(uint32_t session) {
  const uint32_t idx = (session & kSlotMask) - 1;  // session 0 wraps to a huge index
  if (idx >= udp_slots_.size()) return nullptr;
  UdpSlot& slot = udp_slots_[idx];
  return slot.session == session ? &slot : nullptr;
}

std::vector<HostRecord*> Registry::udp_quiet(Millis now, Millis quiet, Millis* next_check) {
  std::vector<HostRecord*> out;
  for (UdpSlot& slot : udp_slots_) {
    if (!slot.confirmed) continue;  // free slots are never confirmed
    // A recent datagram settles it without touching the host record; else any traffic does.
    Millis seen = slot.last_datagram;
    if (now - seen > quiet) {
      if (!slot.host->online) continue;
      seen = std::max(seen, slot.host->last_seen);
    }
    if (now - seen > quiet) {
      slot.confirmed = false;
      out.push_back(slot.host);
    } else if (next_check) {
      *next_check = std::min(*next_check, seen + quiet + 1);
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

const char* Registry::signal_channel(const HostRecord& h) {
  if (!h.online || h.signal_channel.empty()) return "unknown";
  return h.signal_channel == "up" ? "up" : "down";
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
          {"signal_channel", signal_channel(h)},
          {"services", svcs}};
}

nlohmann::json Registry::to_json(Millis wall_now) const {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& [id, h] : hosts_) arr.push_back(host_json(h, wall_now));
  return arr;
}

}  // namespace gantry::fleet
