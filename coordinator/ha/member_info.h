// What a coordinator tells its peers, agents and operators about itself: its name and the
// endpoints it serves. Stored as JSON in etcd (the leader key and each member's key) and read
// back as hostile input: every field is checked where it is parsed.
#pragma once

#include <map>
#include <string>

#include "common/util/expected.h"

namespace gantry::coordinator::ha {

struct MemberInfo {
  std::string name;
  std::string agent;          // tcp://HOST:PORT, the agents' ROUTER
  std::string pub;            // tcp://HOST:PORT, the signals' PUB
  std::string operator_ep;    // tcp://HOST:PORT, the operators' ROUTER
  std::string http;           // http://HOST:PORT or ""
  std::string udp_heartbeat;  // HOST:PORT or ""

  std::string to_json() const;
  // Refuses anything but the fields above, each a valid name or endpoint (bounded length).
  static Expected<MemberInfo> from_json(const std::string& text);
  // The map the wire carries (ErrorMsg.leader, an operator reply's "leader"): agent, pub,
  // operator, http, udp_heartbeat, name; empty fields left out.
  std::map<std::string, std::string> endpoints() const;
};

// The endpoint `bound` (tcp://ADDR:PORT as ZeroMQ reports it) as others reach it: ADDR replaced
// by `advertise_host` when that is set, and a wildcard address by 127.0.0.1.
std::string advertised(const std::string& bound, const std::string& advertise_host);

}  // namespace gantry::coordinator::ha
