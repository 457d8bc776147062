// The agent's connection to the coordinator: a DEALER (orders, chunks, reports, heartbeats)
// and a SUB (fleet-wide signals). Single-threaded; the poll timeout is always the nearest
// deadline. The agent heartbeats when it sent nothing for one interval; silence from the
// coordinator for misses x its announced heartbeat period (Welcome.coordinator_heartbeat_ms;
// the interval until welcomed, or with a coordinator that announces none) recreates the
// DEALER after a jittered backoff and says hello again (Paranoid Pirate, ZeroMQ guide ch. 4).
// With several coordinators (a leader and standbys) it talks to one endpoint pair at a time:
// silence moves it to the next pair of its list, a standby's not_leader answer to the leader it
// names, a Welcome of a lower epoch than it has seen to the next pair (PROTOCOL.md §5.8).
#pragma once

#include <zmq.hpp>

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "agent/core/agent.h"
#include "common/transport/liveness.h"
#include "common/transport/udp_heartbeat.h"
#include "common/transport/zmq_transport.h"
#include "common/util/clock.h"

namespace gantry::agent {

struct SessionOptions {
  std::string host_id;
  // The coordinators' agent endpoints (the DEALER connects to one at a time) and their PUB
  // endpoints (the SUB), same length, same order: pair i is one coordinator.
  std::vector<std::string> coordinators;
  std::vector<std::string> coordinator_pubs;
  Millis heartbeat_interval_ms = 1000;
  uint32_t heartbeat_misses = 3;
  Millis backoff_initial_ms = 100;
  Millis backoff_max_ms = 5000;
  transport::SocketOptions socket;  // HWMs, max message size and (later) CURVE keys
  bool systemd_notify = true;
  bool udp_heartbeats = true;  // offer kCapUdpHeartbeat; use a session the Welcome gives
};

class Session {
 public:
  Session(zmq::context_t& ctx, SessionOptions o, Agent& agent, const Clock& clock);
  ~Session();

  // Serves until `stop_fd` (a signalfd) becomes readable; returns the process exit code.
  int run(int stop_fd);
  // Sends on the DEALER; dropped (and logged) while the connection is being recreated.
  void send(const proto::Message& m);
  // True while a DEALER exists (not waiting out a reconnect backoff).
  bool connected() const { return dealer_.has_value(); }

 private:
  void open_dealer();
  // When the next connection is made: after the jittered backoff (which then doubles); at once
  // after a refused connection (once in a row: skipped_wait_); at once to a leader a standby
  // named.
  enum class Next { kAfterBackoff, kNowRefused, kNowFollowing };
  // Closes the connection and schedules the next.
  void close_dealer(const std::string& why, Next next = Next::kAfterBackoff);
  void send_hello();
  void on_dealer_frame(std::string_view bytes);
  void on_sub_frame(const std::string& bytes);
  void on_monitor_event();
  void heartbeat(Millis now);
  void end_udp_session(const char* why);
  void on_udp_readable();
  void timers(Millis now);
  // Silence from the coordinator after which the connection is given up (the rule, shared
  // with the fleet simulator, is in common/transport/liveness.h: a connection that never heard
  // a frame, maybe a CURVE handshake still queued at the coordinator, is kept longer each time).
  Millis silence_limit() const {
    return transport::silence_limit_ms(welcomed_, coordinator_period_ms_, o_.heartbeat_misses, silent_in_row_);
  }
  Millis jittered(Millis base);
  void open_sub();
  // Moves to the next pair of the list (after silence, or a stale or leaderless answer); logs
  // the switch with `why` when the pair changes.
  void next_endpoint(const std::string& why);
  // Talks to `agent_ep` / `pub_ep` from now on: the SUB is reopened if its endpoint changes; the
  // DEALER connects there when it is next opened.
  void use_endpoints(const std::string& agent_ep, const std::string& pub_ep);
  // A standby's not_leader answer: follow the leader it names, or try the next pair.
  void on_not_leader(const proto::ErrorMsg& e);
  void on_sub_monitor_event();
  // A Heartbeat on the connection that says whether the SUB is up (sent when that changes and
  // after each Welcome, so the coordinator always has the current state, UDP heartbeats or not).
  void report_signal_channel();
  const char* signal_channel() const { return sub_up_ ? "up" : "down"; }

  zmq::context_t& ctx_;
  SessionOptions o_;
  // The coordinator endpoint pair in use: pair `at_` of the list, or (following_) the leader a
  // standby named, which need not be in the list.
  std::string endpoint_;
  std::string pub_endpoint_;
  size_t at_ = 0;
  bool following_ = false;
  // With more than one coordinator to go to: when the connection dropped (monitor) and nothing
  // was heard since; the agent moves on kDropSwitchMs later instead of waiting out its silence
  // limit (up to misses x the coordinator's heartbeat period), so a failover is found quickly.
  Millis dropped_at_ = -1;
  static constexpr Millis kDropSwitchMs = 1000;
  // CONNECT_RETRIED events libzmq owes for drops (it schedules one reconnect per drop), and
  // whether a connect attempt of this connection failed (a CONNECT_RETRIED beyond those): then
  // the coordinator is given up at once, not kDropSwitchMs after the drop.
  int drop_retries_owed_ = 0;
  bool connect_failed_once_ = false;
  // When a dropped connection (dropped_at_ >= 0) is given up: now if a connect attempt failed,
  // else kDropSwitchMs after the drop.
  Millis drop_switch_at(Millis now) const { return connect_failed_once_ ? now : dropped_at_ + kDropSwitchMs; }
  bool skipped_wait_ = false;
  // The endpoint given up last as unreachable, and when: a standby naming it as the leader
  // within kStaleLeaderMs is not followed there (the dead leader's lease is still running).
  std::string unreachable_;
  Millis unreachable_at_ = -1;
  static constexpr Millis kStaleLeaderMs = 10000;
  static constexpr Millis kListBackoffMaxMs = 1000;
  Agent& agent_;
  const Clock& clock_;
  std::optional<zmq::socket_t> dealer_;
  std::optional<zmq::socket_t> sub_;
  // Handshake failures of the SUB's connection. libzmq never retries a connection whose
  // handshake the coordinator refused (a key still pending when the agent started), so the
  // SUB is reopened when a Welcome shows the key is accepted, or after a backoff if it was
  // refused while welcomed.
  std::optional<zmq::socket_t> sub_monitor_;
  // The SUB's connection is up: handshaken (ZMQ_EVENT_HANDSHAKE_SUCCEEDED) and not dropped or
  // refused since. Reported in Heartbeat.signal_channel, at once when it changes.
  bool sub_up_ = false;
  bool sub_refused_ = false;
  Millis sub_reopen_at_ = -1;  // -1: no reopen scheduled
  // When to report a SUB that went down (-1: none due). Not at once: when the coordinator dies
  // the SUB drops with the connection, and a Heartbeat queued before the Hello that the
  // connection's drop queues would only earn a hello_required.
  Millis sub_down_report_at_ = -1;
  static constexpr Millis kSubDownReportDelayMs = 500;
  Millis sub_backoff_ = 0;
  // Disconnects of the DEALER's connection: they end a UDP heartbeat session at once and queue a
  // Hello (the coordinator may have restarted, or know this connection no more; either way only
  // a Hello on the new connection gets us a new Welcome and session).
  std::optional<zmq::socket_t> monitor_;
  int monitor_seq_ = 0;
  // UDP heartbeat session from the last Welcome (session 0: none). Confirmed: the coordinator
  // said it receives the datagrams, so they are our only heartbeat.
  transport::udp_hb::Sender udp_;
  uint32_t udp_session_ = 0;
  std::string udp_key_;
  uint64_t udp_seq_ = 0;
  bool udp_confirmed_ = false;
  uint64_t udp_heard_seq_ = 0;  // the coordinator's last heartbeat datagram of the session
  uint64_t udp_rejected_ = 0;   // datagrams on our socket that were not the coordinator's
  bool udp_deaf_sent_ = false;  // told the coordinator its datagrams do not reach us
  Millis udp_error_logged_ = -1;
  Millis send_error_logged_ = -1;  // when a failed send was last logged (at most once a minute)
  Millis last_heard_ = 0;
  Millis coordinator_period_ms_ = 0;  // how often the coordinator promised to be heard from
  Millis last_sent_ = 0;
  Millis reconnect_at_ = 0;
  Millis backoff_ = 0;
  Millis watchdog_every_ = 0;
  Millis last_watchdog_ = 0;
  uint64_t hb_seq_ = 0;
  bool welcomed_ = false;
  bool connect_failed_ = false;   // libzmq refused the endpoint (run() ends: a config error)
  bool heard_on_dealer_ = false;  // any frame on the current DEALER but a standby's not_leader
  int silent_in_row_ = 0;         // connections given up in a row without hearing a frame
  std::mt19937_64 rng_;
};

}  // namespace gantry::agent
