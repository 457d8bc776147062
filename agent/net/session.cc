#include "agent/net/session.h"

#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/protocol/codec.h"
#include "common/util/log.h"
#include "common/util/sd_notify.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.net"); }

// Frames handled per socket per loop turn, so one busy socket cannot starve the others.
constexpr int kMaxFramesPerTurn = 256;

}  // namespace

Session::Session(zmq::context_t& ctx, SessionOptions o, Agent& agent, const Clock& clock)
    : ctx_(ctx),
      o_(std::move(o)),
      agent_(agent),
      clock_(clock),
      backoff_(o_.backoff_initial_ms),
      rng_(std::random_device{}()) {
  // The config checked the lists (non-empty, same length); an empty one here would be a bug.
  if (!o_.coordinators.empty()) endpoint_ = o_.coordinators[0];
  if (!o_.coordinator_pubs.empty()) pub_endpoint_ = o_.coordinator_pubs[0];
}

Session::~Session() = default;

Millis Session::jittered(Millis base) {
  std::uniform_real_distribution<double> d(0.8, 1.2);
  return std::max<Millis>(1, static_cast<Millis>(static_cast<double>(base) * d(rng_)));
}

void Session::open_dealer() {
  dealer_.emplace(ctx_, zmq::socket_type::dealer);
  transport::SocketOptions so = o_.socket;
  // Without CURVE the coordinator knows us by routing id; with CURVE by our key, and the
  // ROUTER gives each connection a fresh id (so a reconnect never collides with the old one).
  if (!so.curve.enabled()) so.routing_id = o_.host_id;
  transport::configure(*dealer_, so);
  // The drop of the connection is watched for UDP heartbeats, and with several coordinators to
  // move on from a dropped one quickly (on_monitor_event).
  if (o_.udp_heartbeats || o_.coordinators.size() > 1) {
    const std::string ep = "inproc://gantry-agent-dealer-" + std::to_string(++monitor_seq_);
    if (zmq_socket_monitor(dealer_->handle(), ep.c_str(), ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED) == 0) {
      monitor_.emplace(ctx_, zmq::socket_type::pair);
      monitor_->set(zmq::sockopt::linger, 0);
      monitor_->connect(ep);
    } else {
      lg()->warn("cannot monitor the coordinator connection ({}); heartbeats stay on it", zmq_strerror(zmq_errno()));
    }
  }
  if (Status st = transport::connect(*dealer_, endpoint_); !st.ok()) {
    // Not expected: the config refused malformed endpoints (transport::check_connect_endpoint).
    // run() ends with an error.
    lg()->critical("{}", st.error().message);
    dealer_.reset();
    connect_failed_ = true;
    return;
  }
  Millis now = clock_.now_ms();
  last_heard_ = now;
  welcomed_ = false;
  heard_on_dealer_ = false;
  // Until this connection is welcomed, the coordinator owes an answer within our own interval
  // (an unanswered hello is retried on a fresh connection after misses x interval, as ever).
  coordinator_period_ms_ = o_.heartbeat_interval_ms;
  lg()->info("connecting to {} as {}", endpoint_, o_.host_id);
  send_hello();
  agent_.on_reconnect();
  if (o_.systemd_notify) sd::notify("STATUS=connecting to " + endpoint_);
}

void Session::use_endpoints(const std::string& agent_ep, const std::string& pub_ep) {
  endpoint_ = agent_ep;
  if (pub_ep != pub_endpoint_) {
    pub_endpoint_ = pub_ep;
    open_sub();
  }
}

void Session::next_endpoint(const std::string& why) {
  const size_t n = o_.coordinators.size();
  if (n == 0) return;
  const std::string from = endpoint_;
  at_ = (at_ + 1) % n;
  following_ = false;
  if (o_.coordinators[at_] != from) lg()->warn("{}, trying {}", why, o_.coordinators[at_]);
  use_endpoints(o_.coordinators[at_], o_.coordinator_pubs[at_]);
}

void Session::on_not_leader(const proto::ErrorMsg& e) {
  auto agent_ep = e.leader.find("agent");
  auto pub_ep = e.leader.find("pub");
  auto name = e.leader.find("name");
  // The codec checked every value (tcp://HOST:PORT); an empty one means "not known".
  const bool named =
      agent_ep != e.leader.end() && pub_ep != e.leader.end() && !agent_ep->second.empty() && !pub_ep->second.empty();
  const std::string standby = endpoint_;
  const bool just_failed = named && agent_ep->second == unreachable_ && unreachable_at_ >= 0 &&
                           clock_.now_ms() - unreachable_at_ < kStaleLeaderMs;
  const bool follow = named && !just_failed && agent_ep->second != standby;
  // Told where the leader is, the agent goes there now, not after the backoff (after a failover
  // every second counts: the leader waits for this agent's report). One hop only: a standby
  // reached by following waits out the backoff, so standbys with differing views cannot make a
  // loop without pause.
  const Next next = follow && !following_ ? Next::kNowFollowing : Next::kAfterBackoff;
  // A standby's answer proves nothing about the leader's handshake queue: the count of silent
  // connections in a row (transport::silence_limit_ms) stays as it was.
  const int silent_in_row = silent_in_row_;
  close_dealer("the coordinator at " + standby + " is a standby", next);
  silent_in_row_ = silent_in_row;
  if (just_failed) {
    // The leader it names is the one that just went away: its lease has not run out yet.
    next_endpoint("the standby at " + standby + " still names " + agent_ep->second +
                  ", which did not answer; its lease has not run out");
  } else if (follow) {
    lg()->warn("following the leader {}at {} (broadcasts {}), as the standby at {} says",
               name != e.leader.end() && !name->second.empty() ? name->second + " " : "", agent_ep->second,
               pub_ep->second, standby);
    following_ = true;
    use_endpoints(agent_ep->second, pub_ep->second);
  } else {
    next_endpoint("the standby at " + standby + " knows no leader" + (named ? " but itself" : ""));
  }
}

void Session::close_dealer(const std::string& why, Next next) {
  end_udp_session(nullptr);
  // The monitor is stopped before its PAIR and the socket are closed (closing them the other way
  // round left the context's next connection unmade for seconds: found in the CLI).
  if (dealer_ && monitor_) (void)zmq_socket_monitor(dealer_->handle(), nullptr, 0);
  monitor_.reset();
  dealer_.reset();
  drop_retries_owed_ = 0;
  connect_failed_once_ = false;
  silent_in_row_ = heard_on_dealer_ ? 0 : silent_in_row_ + 1;
  if (next == Next::kNowFollowing) {
    reconnect_at_ = clock_.now_ms();
    lg()->warn("{}; going to the leader it names at once", why);
    return;
  }
  // A refused connection cost no coordinator a handshake: the next of the list is tried at
  // once, its handshake still paced by the backoff of the one before. Only once in a row, so a
  // list of coordinators that all refuse is tried at most twice per backoff.
  if (next == Next::kNowRefused && !skipped_wait_) {
    skipped_wait_ = true;
    reconnect_at_ = clock_.now_ms();
    lg()->warn("{}; trying the next at once", why);
    return;
  }
  skipped_wait_ = false;
  Millis wait = jittered(backoff_);
  reconnect_at_ = clock_.now_ms() + wait;
  lg()->warn("{}; reconnecting in {} ms", why, wait);
  // With several coordinators the next try is usually another one (a standby that names the
  // leader, or the next of the list), not this one again: the wait stays short (at most
  // kListBackoffMaxMs, still jittered), so agents reach a new leader soon after it is elected.
  const bool list = o_.coordinators.size() > 1 || following_;
  backoff_ = std::min(backoff_ * 2, list ? std::max(o_.backoff_initial_ms, kListBackoffMaxMs) : o_.backoff_max_ms);
  if (o_.systemd_notify) sd::notify("STATUS=coordinator unreachable; retrying in " + std::to_string(wait) + " ms");
}

void Session::send(const proto::Message& m) {
  if (!dealer_) {
    lg()->debug("not connected; dropping {}", proto::type_name(proto::type_of(m)));
    return;
  }
  Status st = transport::send(*dealer_, m);
  const Millis now = clock_.now_ms();
  // Tried: the next heartbeat is due an interval from now, sent or not. (A peer that never
  // completes its handshake refuses every send at once; retrying at each loop turn would spin.)
  last_sent_ = now;
  if (!st.ok()) {
    if (send_error_logged_ < 0 || now - send_error_logged_ >= 60000) {
      send_error_logged_ = now;
      lg()->warn("send {} failed: {} (more such errors within a minute are not logged)",
                 proto::type_name(proto::type_of(m)), st.error().message);
    }
    return;
  }
}

void Session::send_hello() {
  proto::Hello h = agent_.hello();
  // This session times the coordinator by the period its Welcome announces.
  h.capabilities |= proto::kCapCoordinatorHeartbeat;
  if (o_.udp_heartbeats) h.capabilities |= proto::kCapUdpHeartbeat;
  send(h);
}

void Session::end_udp_session(const char* why) {
  if (udp_session_ == 0) return;
  if (why) lg()->info("{}; heartbeats go over the connection until the next welcome", why);
  udp_.close();
  udp_session_ = 0;
  udp_key_.clear();
  udp_confirmed_ = false;
}

// One heartbeat: a datagram while a UDP session is open, and the message on the connection
// too until the coordinator confirmed that the datagrams arrive.
void Session::heartbeat(Millis now) {
  if (udp_session_ != 0) {
    Status st = udp_.send(udp_session_, ++udp_seq_, udp_key_);
    if (!st.ok() && (udp_error_logged_ < 0 || now - udp_error_logged_ >= 60000)) {
      udp_error_logged_ = now;
      lg()->warn("{} (more such errors within a minute are not logged)", st.error().message);
    }
    if (udp_confirmed_) {
      last_sent_ = now;
      return;
    }
  }
  proto::Heartbeat hb{++hb_seq_};
  hb.signal_channel = signal_channel();
  send(hb);
}

void Session::report_signal_channel() {
  // Before a Welcome the coordinator would only answer hello_required; the Welcome sends it.
  if (!dealer_ || !welcomed_) return;
  proto::Heartbeat hb{++hb_seq_};
  hb.signal_channel = signal_channel();
  send(hb);
}

// The coordinator's heartbeat datagrams: life from the coordinator, as any frame on the
// connection is.
void Session::on_udp_readable() {
  const uint64_t seq = udp_.receive(udp_session_, udp_heard_seq_, udp_key_, &udp_rejected_);
  if (seq == 0) return;
  udp_heard_seq_ = seq;
  last_heard_ = clock_.now_ms();
}

void Session::on_monitor_event() {
  bool dropped = false, retried = false;
  for (int i = 0; i < 16; ++i) {
    zmq::message_t ev, addr;  // libzmq 4: [uint16 event, uint32 value], then the endpoint
    if (!monitor_->recv(ev, zmq::recv_flags::dontwait)) break;
    if (ev.more()) (void)monitor_->recv(addr, zmq::recv_flags::dontwait);
    uint16_t id = 0;
    if (ev.size() >= sizeof id) std::memcpy(&id, ev.data(), sizeof id);
    if (id == ZMQ_EVENT_DISCONNECTED) {
      dropped = true;
      // libzmq answers a drop with a reconnect it schedules (one CONNECT_RETRIED) ...
      ++drop_retries_owed_;
    } else if (id == ZMQ_EVENT_CONNECT_RETRIED) {
      retried = true;
      // ... any other CONNECT_RETRIED follows a connect attempt that failed: refused (nothing
      // listens there: the coordinator's process is gone) or timed out.
      if (drop_retries_owed_ > 0)
        --drop_retries_owed_;
      else
        connect_failed_once_ = true;
    }
  }
  const bool list = o_.coordinators.size() > 1 || following_;
  if ((dropped || retried) && list && dropped_at_ < 0) dropped_at_ = clock_.now_ms();
  if (!dropped) return;
  // The connection dropped: whatever answers next (the same coordinator, or a restarted one) is
  // owed a Hello before anything else; the signal channel is reported again after its Welcome.
  welcomed_ = false;
  if (o_.coordinators.size() > 1 || following_) {
    // Several coordinators: the one we lost may be gone for good (its machine lost), and the
    // next may lead by now. Time the connection as a new one (misses x interval, §5.2, not the
    // Welcome's long period), so the next pair is tried within seconds if nothing answers here.
    coordinator_period_ms_ = o_.heartbeat_interval_ms;
    last_heard_ = clock_.now_ms();
    heard_on_dealer_ = false;
    lg()->info("the connection to the coordinator at {} dropped; trying the next one unless it answers within {} ms",
               endpoint_, silence_limit());
  }
  if (udp_session_ == 0) return;
  end_udp_session("the connection to the coordinator dropped");
  // A Hello at once (libzmq sends it when it has reconnected): a restarted coordinator needs
  // one, and one that only lost the connection welcomes us again. A Heartbeat here would cost
  // a round trip more (hello_required, then the Hello), which in a reconnect storm of
  // thousands of agents queues behind everyone else's handshake (docs/BENCHMARKS.md figure 4).
  send_hello();
  agent_.on_reconnect();
}

void Session::on_dealer_frame(std::string_view bytes) {
  last_heard_ = clock_.now_ms();
  dropped_at_ = -1;
  connect_failed_once_ = false;
  skipped_wait_ = false;
  heard_on_dealer_ = true;
  // Chunks (a download's bulk) go to the agent with their data still in the zmq frame.
  if (auto chunk = proto::decode_chunk(bytes)) {
    agent_.handle_chunk(*chunk);
    return;
  }
  auto msg = proto::decode(bytes);
  if (!msg) {
    lg()->warn("dropping a bad frame from the coordinator ({} bytes): {}: {}", bytes.size(), msg.error().code,
               msg.error().message);
    return;
  }
  switch (proto::type_of(*msg)) {
    case proto::MsgType::kWelcome: {
      const auto& w = std::get<proto::Welcome>(*msg);
      if (!agent_.observe_epoch(w.epoch, "welcome from " + endpoint_)) {
        // A deposed coordinator (or one restored from an older store): not ours to follow.
        const std::string stale = endpoint_;
        close_dealer("the coordinator at " + stale + " is behind this agent's epoch");
        next_endpoint("the coordinator at " + stale + " has a stale epoch");
        return;
      }
      if (w.protocol_version != proto::kProtocolVersion)
        lg()->error("coordinator speaks protocol {}, this agent {}", w.protocol_version, proto::kProtocolVersion);
      o_.heartbeat_interval_ms = w.heartbeat_interval_ms;
      o_.heartbeat_misses = w.heartbeat_misses;
      // A coordinator that announces no period of its own heartbeats every interval.
      coordinator_period_ms_ = w.coordinator_heartbeat_ms ? w.coordinator_heartbeat_ms : w.heartbeat_interval_ms;
      backoff_ = o_.backoff_initial_ms;
      end_udp_session(nullptr);
      if (o_.udp_heartbeats && w.udp_session != 0) {
        if (Status st = udp_.open(endpoint_, static_cast<uint16_t>(w.udp_port)); st.ok()) {
          udp_session_ = w.udp_session;
          udp_key_ = w.udp_key;
          udp_seq_ = 0;
          udp_heard_seq_ = 0;
          udp_deaf_sent_ = false;
          lg()->info("heartbeat datagrams offered on UDP port {}", w.udp_port);
        } else {
          lg()->warn("{}; heartbeats stay on the connection", st.error().message);
        }
      }
      if (!welcomed_) {
        lg()->info("welcomed by the coordinator (epoch {}, heartbeat {} ms x {}, coordinator heard from every {} ms)",
                   w.epoch, w.heartbeat_interval_ms, w.heartbeat_misses, coordinator_period_ms_);
        if (o_.systemd_notify) sd::notify("STATUS=connected to " + endpoint_);
      }
      welcomed_ = true;
      if (sub_refused_) {
        // Welcomed: our key is accepted now, so a subscription refused before can succeed.
        lg()->info("reopening the broadcast subscription the coordinator refused before it accepted this agent");
        sub_backoff_ = 0;
        open_sub();
      }
      // A coordinator learns the state of our signal channel from a heartbeat (it forgets it at
      // every hello, and a restarted one never knew it).
      report_signal_channel();
      break;
    }
    case proto::MsgType::kHeartbeat: {
      const auto& hb = std::get<proto::Heartbeat>(*msg);
      if (udp_session_ == 0) break;
      if (hb.udp_lost && udp_confirmed_) {
        udp_confirmed_ = false;
        lg()->warn("the coordinator stopped receiving our heartbeat datagrams; heartbeating over the connection again");
        proto::Heartbeat again{++hb_seq_};
        again.signal_channel = signal_channel();
        send(again);
      } else if (hb.udp_seq > 0 && hb.udp_seq <= udp_seq_ && !udp_confirmed_) {
        udp_confirmed_ = true;
        lg()->info("the coordinator receives our heartbeat datagrams; they are our only heartbeat now");
      }
      break;
    }
    case proto::MsgType::kError: {
      const auto& e = std::get<proto::ErrorMsg>(*msg);
      if (e.code == "not_leader") {
        on_not_leader(e);
      } else if (e.code == "hello_required") {
        lg()->info("coordinator asks for a hello (it restarted?)");
        send_hello();
        agent_.on_reconnect();
      } else if (e.code == "enrollment_pending" || e.code == "identity") {
        // Not enrolled (yet): the coordinator ignores us until an operator accepts our key;
        // the silence makes us reconnect with backoff and say hello again.
        lg()->warn("coordinator refused this agent: {} ({})", e.message, e.code);
      } else {
        agent_.handle(*msg);
      }
      break;
    }
    case proto::MsgType::kOrder:
    case proto::MsgType::kChunk:
      agent_.handle(*msg);
      break;
    default:
      lg()->warn("ignoring unexpected {} from the coordinator", proto::type_name(proto::type_of(*msg)));
  }
}

void Session::on_sub_frame(const std::string& bytes) {
  auto msg = proto::decode(bytes);
  if (!msg) {
    lg()->warn("dropping a bad broadcast ({} bytes): {}: {}", bytes.size(), msg.error().code, msg.error().message);
    return;
  }
  if (proto::type_of(*msg) != proto::MsgType::kSignal) {
    lg()->warn("ignoring unexpected broadcast {}", proto::type_name(proto::type_of(*msg)));
    return;
  }
  const auto& s = std::get<proto::Signal>(*msg);
  lg()->info("signal {} for rollout {} of {}", s.kind, s.rollout_id, s.service);
  agent_.handle(*msg);
}

void Session::timers(Millis now) {
  if (dealer_ && dropped_at_ >= 0 && now >= drop_switch_at(now)) {
    // A coordinator killed or its machine gone: libzmq would retry it for ever. Another one of
    // the list leads, or will once this one's lease runs out. A refused connection is given up
    // at once (its process is gone); one that only went quiet gets kDropSwitchMs to come back.
    const std::string gone = endpoint_;
    const bool refused = connect_failed_once_;
    dropped_at_ = -1;
    unreachable_ = gone;
    unreachable_at_ = now;
    close_dealer(refused ? "the connection to the coordinator at " + gone + " was refused"
                         : "the connection to the coordinator at " + gone + " dropped and did not come back within " +
                               std::to_string(kDropSwitchMs) + " ms",
                 refused ? Next::kNowRefused : Next::kAfterBackoff);
    next_endpoint("coordinator at " + gone + " unreachable");
  }
  if (dealer_) {
    if (now - last_heard_ >= silence_limit()) {
      const std::string silent = endpoint_;
      close_dealer("no word from the coordinator at " + silent + " for " + std::to_string(now - last_heard_) + " ms");
      next_endpoint("coordinator at " + silent + " silent");
    } else if (now - last_sent_ >= o_.heartbeat_interval_ms) {
      heartbeat(now);
    }
    // Confirmed, and the coordinator's heartbeat (a datagram now) is two intervals overdue:
    // its datagrams do not reach us (a firewall in front of this host?). Say so once; it then
    // heartbeats us over the connection, well before our silence limit (misses x its period).
    if (dealer_ && udp_confirmed_ && !udp_deaf_sent_ &&
        now - last_heard_ > coordinator_period_ms_ + 2 * o_.heartbeat_interval_ms) {
      udp_deaf_sent_ = true;
      lg()->warn("no heartbeat datagram from the coordinator for {} ms; asking for its heartbeats over the connection",
                 now - last_heard_);
      proto::Heartbeat deaf{++hb_seq_};
      deaf.udp_deaf = true;
      deaf.signal_channel = signal_channel();
      send(deaf);
    }
  } else if (now >= reconnect_at_) {
    open_dealer();
  }
  // A drop of the SUB, reported once the connection had time to show whether it dropped too
  // (then the Welcome after the next Hello reports it instead).
  if (sub_down_report_at_ >= 0 && now >= sub_down_report_at_) {
    sub_down_report_at_ = -1;
    if (!sub_up_) report_signal_channel();
  }
  if (watchdog_every_ > 0 && now - last_watchdog_ >= watchdog_every_) {
    sd::notify("WATCHDOG=1");
    last_watchdog_ = now;
  }
}

namespace {
constexpr int kSubHandshakeFailed =
    ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
}  // namespace

void Session::open_sub() {
  if (sub_ && sub_monitor_) (void)zmq_socket_monitor(sub_->handle(), nullptr, 0);
  sub_monitor_.reset();
  sub_.emplace(ctx_, zmq::socket_type::sub);
  transport::configure(*sub_, o_.socket);
  sub_->set(zmq::sockopt::subscribe, "");
  const std::string ep = "inproc://gantry-agent-sub-" + std::to_string(++monitor_seq_);
  if (zmq_socket_monitor(sub_->handle(), ep.c_str(),
                         kSubHandshakeFailed | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) == 0) {
    sub_monitor_.emplace(ctx_, zmq::socket_type::pair);
    sub_monitor_->set(zmq::sockopt::linger, 0);
    sub_monitor_->connect(ep);
  } else {
    lg()->warn(
        "cannot monitor the broadcast subscription ({}); a refused one is not reopened, and its state is "
        "reported as down",
        zmq_strerror(zmq_errno()));
  }
  // A new socket is down until its handshake succeeds (the next heartbeat says so).
  sub_up_ = false;
  sub_refused_ = false;
  sub_reopen_at_ = -1;
  if (Status st = transport::connect(*sub_, pub_endpoint_); !st.ok()) {
    lg()->critical("{}", st.error().message);
    connect_failed_ = true;
  }
}

void Session::on_sub_monitor_event() {
  // Events in the order they happened: the last success, drop or refusal decides the state.
  bool failed = false;
  const bool was_up = sub_up_;
  for (int i = 0; i < 16; ++i) {
    zmq::message_t ev, addr;  // libzmq 4: [uint16 event, uint32 value], then the endpoint
    if (!sub_monitor_->recv(ev, zmq::recv_flags::dontwait)) break;
    if (ev.more()) (void)sub_monitor_->recv(addr, zmq::recv_flags::dontwait);
    uint16_t id = 0;
    if (ev.size() >= sizeof id) std::memcpy(&id, ev.data(), sizeof id);
    if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      sub_up_ = true;
      sub_backoff_ = 0;
    } else if (id == ZMQ_EVENT_DISCONNECTED) {
      sub_up_ = false;
    } else if ((id & kSubHandshakeFailed) != 0) {
      sub_up_ = false;
      failed = true;
    }
  }
  if (sub_up_ != was_up) {
    // Up is reported at once; a drop rides on the next heartbeat. (A drop at once would race
    // with a coordinator that died: its SUB drops with the connection, and a Heartbeat queued
    // before the Hello that the connection's own drop queues would cost a hello_required.)
    if (sub_up_) {
      lg()->info("the broadcast subscription is up");
      sub_down_report_at_ = -1;
      report_signal_channel();
    } else {
      if (!failed) lg()->warn("the broadcast subscription dropped; libzmq reconnects it");
      sub_down_report_at_ = clock_.now_ms() + kSubDownReportDelayMs;
    }
  }
  if (!failed || sub_refused_) return;
  sub_refused_ = true;
  if (welcomed_) {
    sub_backoff_ = sub_backoff_ == 0 ? o_.backoff_initial_ms : std::min(sub_backoff_ * 2, o_.backoff_max_ms);
    sub_reopen_at_ = clock_.now_ms() + jittered(sub_backoff_);
    lg()->warn("the coordinator refused the broadcast subscription; reopening it in {} ms",
               sub_reopen_at_ - clock_.now_ms());
  } else {
    // The key is Z85 (printable, no quotes or spaces), so the command can be pasted as is.
    lg()->warn(
        "the coordinator refused the broadcast subscription: this agent's key is not accepted (yet); an admin "
        "accepts it with: gantry keys accept '{}' --host {}. The subscription is reopened when the coordinator "
        "welcomes this agent",
        o_.socket.curve.public_key, o_.host_id);
  }
}

int Session::run(int stop_fd) {
  open_sub();
  if (connect_failed_) return 1;
  open_dealer();
  if (connect_failed_) return 1;
  if (o_.systemd_notify) {
    uint64_t usec = sd::watchdog_usec();
    if (usec > 0) watchdog_every_ = std::max<Millis>(1, static_cast<Millis>(usec / 2000));
    sd::notify("READY=1");
  }
  for (;;) {
    if (connect_failed_) return 1;
    Millis now = clock_.now_ms();
    Millis deadline = agent_.next_deadline();
    if (dealer_) {
      deadline = std::min(deadline, last_sent_ + o_.heartbeat_interval_ms);
      deadline = std::min(deadline, last_heard_ + silence_limit());
      if (dropped_at_ >= 0) deadline = std::min(deadline, drop_switch_at(now));
      if (udp_confirmed_ && !udp_deaf_sent_)
        deadline = std::min(deadline, last_heard_ + coordinator_period_ms_ + 2 * o_.heartbeat_interval_ms + 1);
    } else {
      deadline = std::min(deadline, reconnect_at_);
    }
    if (watchdog_every_ > 0) deadline = std::min(deadline, last_watchdog_ + watchdog_every_);
    if (sub_reopen_at_ >= 0) deadline = std::min(deadline, sub_reopen_at_);
    if (sub_down_report_at_ >= 0) deadline = std::min(deadline, sub_down_report_at_);
    long timeout = static_cast<long>(std::clamp<Millis>(deadline - now, 0, 1000));

    std::vector<zmq::pollitem_t> items;
    items.push_back({nullptr, stop_fd, ZMQ_POLLIN, 0});
    items.push_back({nullptr, agent_.wake_fd(), ZMQ_POLLIN, 0});
    items.push_back({sub_->handle(), 0, ZMQ_POLLIN, 0});
    if (dealer_) items.push_back({dealer_->handle(), 0, ZMQ_POLLIN, 0});
    const size_t mon_at = items.size();
    if (monitor_) items.push_back({monitor_->handle(), 0, ZMQ_POLLIN, 0});
    const size_t udp_at = items.size();
    if (udp_session_ != 0 && udp_.is_open()) items.push_back({nullptr, udp_.fd(), ZMQ_POLLIN, 0});
    const size_t sub_mon_at = items.size();
    if (sub_monitor_) items.push_back({sub_monitor_->handle(), 0, ZMQ_POLLIN, 0});
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) lg()->error("poll: {}", e.what());
    }
    if (items[0].revents & ZMQ_POLLIN) {
      signalfd_siginfo si{};
      (void)!::read(stop_fd, &si, sizeof si);
      lg()->info("signal {} received; stopping", si.ssi_signo);
      if (o_.systemd_notify) sd::notify("STOPPING=1");
      agent_.shutdown();
      dealer_.reset();
      sub_monitor_.reset();
      sub_.reset();
      return 0;
    }
    if (monitor_ && mon_at < items.size() && (items[mon_at].revents & ZMQ_POLLIN)) on_monitor_event();
    if (udp_at < items.size() && (items[udp_at].revents & ZMQ_POLLIN)) on_udp_readable();
    if (sub_monitor_ && sub_mon_at < items.size() && (items[sub_mon_at].revents & ZMQ_POLLIN)) on_sub_monitor_event();
    if (sub_reopen_at_ >= 0 && clock_.now_ms() >= sub_reopen_at_) {
      lg()->info("reopening the broadcast subscription");
      open_sub();
    }
    for (int i = 0; i < kMaxFramesPerTurn; ++i) {
      bool dropped = false;
      auto f = transport::recv_frame(*sub_, &dropped);
      if (dropped) lg()->warn("dropping a multi-frame broadcast");
      if (!f) {
        if (dropped) continue;
        break;
      }
      on_sub_frame(*f);
    }
    for (int i = 0; dealer_ && i < kMaxFramesPerTurn; ++i) {
      // Received into a zmq message and handled from there: no copy of a chunk's 256 KiB.
      zmq::message_t f;
      bool dropped = false;
      if (!transport::recv_frame_msg(*dealer_, f, &dropped)) {
        if (!dropped) break;
        last_heard_ = clock_.now_ms();
        heard_on_dealer_ = true;
        lg()->warn("dropping a multi-frame message from the coordinator");
        continue;
      }
      on_dealer_frame(std::string_view(static_cast<const char*>(f.data()), f.size()));
    }
    agent_.tick();
    timers(clock_.now_ms());
  }
}

}  // namespace gantry::agent
