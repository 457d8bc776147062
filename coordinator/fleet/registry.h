// The coordinator's live view of the fleet: which hosts exist, which answer, what they run.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/protocol/messages.h"
#include "common/util/clock.h"

namespace gantry::fleet {

struct ServiceView {
  std::string current_version;
  std::string previous_version;
  std::string state = "idle";  // idle | updating | reverting
  std::string order_id;
  std::string phase;  // last progress phase reported for the order in progress
  std::string phase_detail;
};

struct HostRecord {
  std::string host_id;
  std::string identity;  // ZeroMQ routing id of its connection
  std::string agent_version;
  std::map<std::string, std::string> labels;
  std::map<std::string, ServiceView> services;
  bool online = false;
  bool said_hello = false;  // since this coordinator started
  Millis last_seen = 0;     // monotonic
  Millis last_seen_wall = 0;
  Millis first_seen_wall = 0;
};

class Registry {
 public:
  // Known from the store after a restart: online until the heartbeat timeout says otherwise,
  // so a coordinator restart alone never makes hosts count as lost.
  void restore(HostRecord h);
  // A hello: creates or refreshes the host. Returns true if the host was offline before.
  bool on_hello(const proto::Hello& h, const std::string& identity, Millis now, Millis wall);
  // Any traffic from a host; false if the identity is not a known, greeted host.
  bool touch(const std::string& identity, Millis now, Millis wall);
  // Hosts silent for longer than `timeout`; they are marked offline and returned.
  std::vector<std::string> expire(Millis now, Millis timeout);

  HostRecord* by_identity(const std::string& identity);
  HostRecord* find(const std::string& host_id);
  const std::map<std::string, HostRecord>& hosts() const { return hosts_; }

  nlohmann::json to_json(Millis wall_now) const;
  static nlohmann::json host_json(const HostRecord& h, Millis wall_now);

 private:
  std::map<std::string, HostRecord> hosts_;  // by host id
  std::map<std::string, std::string> identity_to_host_;
};

}  // namespace gantry::fleet
