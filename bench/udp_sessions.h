// The floor's UDP heartbeat sessions (gantry-fleet-sim floor --udp-heartbeats, bench/tools.cc).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/transport/udp_heartbeat.h"

namespace gantry::bench {

namespace udp_hb = transport::udp_hb;

// The coordinator's side of UDP heartbeat sessions (PROTOCOL.md, common/transport/
// udp_heartbeat.h) with nothing around it: a session per Welcome, each datagram checked
// (size, magic, known session, MAC, seq above the session's last), the first valid one of a
// session (or the first after it was declared lost) confirmed, a confirmed host silent for too
// long declared lost. The floor's part of the exchange, so the at-rest baseline does the work
// the coordinator does per datagram.
class UdpSessions {
 public:
  struct Offer {
    uint32_t session = 0;  // 0: none could be drawn
    std::string key;
  };
  // A new session for `host`, replacing the one its previous Welcome offered, bound to the
  // connection `conn` (routing id): its messages count as signs of life too.
  Offer open(const std::string& host, const std::string& conn, int64_t now) {
    close(host);
    uint32_t id = 0;
    for (int tries = 0; tries < 64 && id == 0; ++tries) {  // 32-bit ids: a clash is rare, 64 in a row impossible
      uint32_t c = static_cast<uint32_t>(rng_());
      if (c != 0 && !sessions_.count(c)) id = c;
    }
    if (id == 0) return {};
    Session& s = sessions_[id];
    s.host = host;
    s.conn = conn;
    s.key = udp_hb::new_key();
    s.last_ms = now;
    by_host_[host] = id;
    by_conn_[conn] = id;
    opened_++;
    return {id, s.key};
  }
  // The host said hello without asking for one (or again): its old session ends.
  void close(const std::string& host) {
    auto h = by_host_.find(host);
    if (h == by_host_.end()) return;
    auto s = sessions_.find(h->second);
    if (auto c = by_conn_.find(s->second.conn); c != by_conn_.end() && c->second == h->second) by_conn_.erase(c);
    sessions_.erase(s);
    by_host_.erase(h);
  }
  // Any message on the connection is a sign of life, as for the coordinator's liveness.
  void touch_conn(const std::string& conn, int64_t now) {
    if (auto c = by_conn_.find(conn); c != by_conn_.end()) sessions_.at(c->second).last_ms = now;
  }
  // Refers into the session: valid until the next call that changes sessions.
  struct Confirm {
    const std::string& host;
    const std::string& conn;
    uint64_t seq;
  };
  // One datagram; returns what to confirm on the connection when it is the session's first
  // valid one (or the first since the session was declared lost).
  std::optional<Confirm> on_datagram(const unsigned char* data, std::size_t len, int64_t now,
                                     const udp_hb::Peer& peer = {}) {
    udp_hb::Header h;
    udp_hb::Reject r = udp_hb::parse(data, len, &h);
    auto s = sessions_.end();
    if (r == udp_hb::Reject::kNone) {
      s = sessions_.find(h.session);
      if (s == sessions_.end()) {
        r = udp_hb::Reject::kUnknownSession;
      } else if (!udp_hb::authentic(data, s->second.key)) {
        r = udp_hb::Reject::kMac;
      } else if (h.seq <= s->second.last_seq) {
        r = udp_hb::Reject::kReplay;
      }
    }
    if (r != udp_hb::Reject::kNone) {
      rejected_[static_cast<std::size_t>(r)]++;
      return std::nullopt;
    }
    Session& ss = s->second;
    accepted_++;
    ss.last_seq = h.seq;
    ss.last_ms = now;
    if (peer.len) ss.peer = peer;
    if (ss.confirmed) return std::nullopt;
    ss.confirmed = true;
    confirmed_++;
    return Confirm{ss.host, ss.conn, h.seq};
  }
  // Confirmed sessions silent for more than `quiet_ms`: unconfirmed, and (host, routing id)
  // returned to be told udp_lost.
  std::vector<std::pair<std::string, std::string>> quiet(int64_t now, int64_t quiet_ms) {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& [id, s] : sessions_) {
      if (!s.confirmed || now - s.last_ms <= quiet_ms) continue;
      s.confirmed = false;
      lost_++;
      out.emplace_back(s.host, s.conn);
    }
    return out;
  }
  // As the coordinator: our heartbeat to `host` as a datagram of its session, when the session
  // is confirmed, we know where the agent is and it did not say it is deaf to them.
  std::optional<udp_hb::Datagram> heartbeat_for(const std::string& host) {
    auto h = by_host_.find(host);
    if (h == by_host_.end()) return std::nullopt;
    Session& s = sessions_.at(h->second);
    if (!s.confirmed || s.deaf || s.peer.len == 0) return std::nullopt;
    sent_++;
    return udp_hb::seal(h->second, ++s.sent_seq, s.key, udp_hb::From::kCoordinator);
  }
  const udp_hb::Peer* peer_of(const std::string& host) const {
    auto h = by_host_.find(host);
    return h == by_host_.end() ? nullptr : &sessions_.at(h->second).peer;
  }
  // Heartbeat.udp_deaf on the connection: heartbeat it there for the rest of the session.
  void deaf(const std::string& conn) {
    if (auto c = by_conn_.find(conn); c != by_conn_.end()) sessions_.at(c->second).deaf = true;
  }
  nlohmann::json counters() const {
    nlohmann::json rej = nlohmann::json::object();
    for (std::size_t k = 1; k < rejected_.size(); ++k)
      rej[udp_hb::reject_name(static_cast<udp_hb::Reject>(k))] = rejected_[k];
    return {{"sessions", sessions_.size()}, {"opened", opened_}, {"accepted", accepted_}, {"rejected", rej},
            {"confirmed", confirmed_},      {"lost", lost_},     {"sent", sent_}};
  }

 private:
  struct Session {
    std::string host, conn, key;
    uint64_t last_seq = 0, sent_seq = 0;
    int64_t last_ms = 0;  // last sign of life: a valid datagram or a message on the connection
    bool confirmed = false, deaf = false;
    udp_hb::Peer peer;  // where its last valid datagram came from
  };
  std::unordered_map<uint32_t, Session> sessions_;
  std::unordered_map<std::string, uint32_t> by_host_, by_conn_;
  std::mt19937 rng_{std::random_device{}()};
  std::array<uint64_t, 6> rejected_{};  // by udp_hb::Reject
  uint64_t opened_ = 0, accepted_ = 0, confirmed_ = 0, lost_ = 0, sent_ = 0;
};

}  // namespace gantry::bench
