// The coordinator's live view of the fleet: which hosts exist, which answer, what they run.
#pragma once

#include <array>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/protocol/messages.h"
#include "common/transport/udp_heartbeat.h"
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
  uint64_t hellos = 0;      // Hellos it sent since this coordinator started (each one counts)
  // Its hello had kCapCoordinatorHeartbeat: it hears from us every coordinator_heartbeat_ms
  // at least, not every heartbeat interval.
  bool coordinator_heartbeat = false;
  Millis last_seen = 0;    // monotonic
  Millis grace_until = 0;  // monotonic; restored after a restart: not expired before this
  Millis last_sent = 0;    // monotonic; anything sent to it (a heartbeat is due only after silence)
  Millis last_seen_wall = 0;
  Millis first_seen_wall = 0;
  // Its agent's last Heartbeat.signal_channel since its hello: "up" | "down"; "" not reported
  // (an older agent, or none since the hello).
  std::string signal_channel;
  // Its UDP heartbeat session (0: none), offered in its last Welcome; the session's key and
  // sequence live in the registry's slot table (UdpSlot).
  uint32_t udp_session = 0;
};

// One UDP heartbeat session. Looked up for every datagram (10,000 a second at rest), so the
// session id is its index in a flat table (low 20 bits, + 1) plus a generation (high 12 bits,
// so a reused slot's old datagrams are an unknown session, not a forgery), and what the check
// needs sits in the slot itself: one cache line, then the host record only to stamp it.
struct UdpSlot {
  uint32_t session = 0;    // 0: free
  bool confirmed = false;  // we told the agent (Heartbeat.udp_seq) that its datagrams arrive
  uint64_t last_seq = 0;
  Millis last_datagram = 0;  // monotonic
  std::array<unsigned char, 32> key{};
  HostRecord* host = nullptr;
  // Where its last valid datagram came from: our own heartbeats to a confirmed session go
  // there as datagrams, unless the agent said it does not hear them (deaf).
  transport::udp_hb::Peer peer;
  uint64_t sent_seq = 0;
  bool deaf = false;
};

class Registry {
 public:
  // Known from the store after a restart: online until its grace_until and then the heartbeat
  // timeout say otherwise, so a coordinator restart alone never makes hosts count as lost.
  void restore(HostRecord h);
  // A hello: creates or refreshes the host. Returns true if the host was offline before.
  bool on_hello(const proto::Hello& h, const std::string& identity, Millis now, Millis wall);
  // Any traffic from a host: the greeted host it came from, or null if there is none.
  HostRecord* touch(const std::string& identity, Millis now, Millis wall);
  // Hosts silent for longer than `timeout`; they are marked offline and returned. `next_check`
  // (optional) gets the earliest time another host can expire: traffic only moves deadlines
  // later and a new host's is a full timeout away, so nothing needs checking before then.
  std::vector<std::string> expire(Millis now, Millis timeout, Millis* next_check = nullptr);

  // UDP heartbeat sessions: one per host at most, replaced at each Welcome. open returns the
  // new session's slot (null when 2^20 - 1 sessions are live). Slot pointers stay valid until
  // the next open.
  UdpSlot* open_udp_session(HostRecord& h, const std::string& key, Millis now);
  void close_udp_session(HostRecord& h);
  UdpSlot* udp_slot(uint32_t session);
  // Confirmed UDP hosts silent (no traffic at all) for longer than `quiet` (< the expiry
  // timeout): unconfirmed and returned, for the caller to tell them to heartbeat over their
  // connection again. `next_check` is lowered to when the next one can go quiet.
  std::vector<HostRecord*> udp_quiet(Millis now, Millis quiet, Millis* next_check);
  // Every host, in creation order (a flat list: the per-interval scans walk it, not the map).
  const std::vector<HostRecord*>& all() const { return all_; }

  HostRecord* by_identity(const std::string& identity);
  HostRecord* find(const std::string& host_id);
  const std::map<std::string, HostRecord>& hosts() const { return hosts_; }

  nlohmann::json to_json(Millis wall_now) const;
  static nlohmann::json host_json(const HostRecord& h, Millis wall_now);
  // What is shown for its signal channel: "up" | "down" as its agent last said while online,
  // "unknown" when offline or not reported.
  static const char* signal_channel(const HostRecord& h);

 private:
  std::map<std::string, HostRecord> hosts_;  // by host id; never erased, so pointers stay valid
  // Looked up on every agent message: hashed, and straight to the record.
  std::unordered_map<std::string, HostRecord*> by_identity_;
  std::vector<HostRecord*> all_;
  HostRecord& record(const std::string& host_id);  // creates (and lists) a new one
  std::vector<UdpSlot> udp_slots_;
  std::vector<uint32_t> udp_free_;  // indexes of free slots
  uint32_t udp_generation_ = 0;
};

}  // namespace gantry::fleet
