// `gantry-fleet-sim agents`: N simulated agents in one process. Each is a DEALER (and, if
// asked, a SUB) speaking the real protocol through common/ (codec, transport::configure):
// hello, heartbeats, order acks with de-duplication, reports after a configurable swap and
// verify time, hello again on `hello_required`, liveness timeout (misses x the coordinator's
// announced heartbeat period, as the real agent) with jittered backoff.
// One thread, one epoll set over the sockets' ZMQ_FDs, one zmq context. With --raw-sub the SUB
// side is a raw ZMTP 3.0 subscriber on a plain socket in the same epoll set (bench/zmtp_sub.h):
// the receive cost of the TCP baseline's receivers; the DEALER stays libzmq. With --raw-dealer
// (CURVE only) the DEALER is a raw ZMTP 3.0 + CURVE client on a plain socket in the same epoll
// set (bench/zmtp_curve_dealer.h): the same handshake and bytes without a libzmq socket per agent.
// With --udp-heartbeats (default) the agents announce kCapUdpHeartbeat and, given a session in
// the Welcome, heartbeat with datagrams as the real agent does (common/transport/
// udp_heartbeat.h): both the datagram and the ZMTP heartbeat until the coordinator confirms
// the session (Heartbeat.udp_seq), the datagram alone after, both again after udp_lost.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <sodium.h>
#include <boost/program_options.hpp>
#include <zmq.hpp>

#include "bench/sim_common.h"
#include "bench/zmtp_curve_dealer.h"
#include "bench/zmtp_sub.h"
#include "common/protocol/codec.h"
#include "common/transport/liveness.h"
#include "common/transport/udp_heartbeat.h"
#include "common/transport/zmq_transport.h"

namespace po = boost::program_options;

namespace gantry::bench {
namespace {

namespace udp_hb = transport::udp_hb;

std::atomic<bool> g_stop{false};
std::atomic<int> g_kill{0};
void on_term(int) { g_stop = true; }
void on_usr1(int) { g_kill++; }

struct Options {
  std::string endpoint, pub_endpoint;
  int agents = 100;
  int first = 0;
  std::string prefix = "sim-";
  std::string service = "web";
  std::string version = "v0";
  int swap_ms = 0, verify_ms = 0;
  bool hold_updates = false;   // keep updates queued until a signal cancels them (broadcast bench)
  bool no_dealer = false;      // SUB only (broadcast listeners)
  bool raw_sub = false;        // the SUB side as a raw ZMTP 3.0 subscriber (zmtp_sub.h), plaintext only
  bool raw_dealer = false;     // the DEALER as a raw ZMTP 3.0 + CURVE client (zmtp_curve_dealer.h)
  bool udp_heartbeats = true;  // announce kCapUdpHeartbeat and use the sessions Welcomes offer
  int io_threads = 2;
  int stats_ms = 250;
  int duration_s = 900;
  double connect_per_ms = 0;  // 0: open every agent at once; fractions allowed (0.125: one per 8 ms)
  std::string curve_seed;     // CURVE: each agent's own key pair derived from this (sim_keypair)
  transport::SocketOptions socket;
};

struct Held {
  proto::Order order;
};

struct Agent {
  std::string id;
  std::unique_ptr<zmq::socket_t> dealer, sub;
  // As the real agent: a monitor of the DEALER whose DISCONNECTED event ends the UDP session
  // and queues a Hello at once (sent when reconnected; datagrams alone would wait out the
  // silence limit).
  std::unique_ptr<zmq::socket_t> monitor;
  std::unique_ptr<ZmtpSub> rsub;         // --raw-sub: instead of `sub`
  std::unique_ptr<CurveDealer> rdealer;  // --raw-dealer: instead of `dealer` and `monitor`
  bool opened = false, dead = false, welcomed = false;
  bool heard = false;     // any frame on the current DEALER
  int silent_in_row = 0;  // DEALERs given up in a row without a frame (common/transport/liveness.h)
  uint64_t epoch = 0;
  int64_t last_sent = 0, last_heard = 0, reconnect_at = 0, backoff = 100;
  int64_t last_sent_us = 0;
  int64_t welcome_us = 0;  // first welcome of the current epoch (wall clock)
  transport::CurveOptions curve;
  uint64_t hb_seq = 0;
  // The UDP heartbeat session of the current connection's Welcome (udp_session 0: none).
  uint32_t udp_session = 0;
  uint16_t udp_port = 0;
  std::string udp_key;
  uint64_t udp_seq = 0;
  uint64_t udp_heard_seq = 0;  // the coordinator's last heartbeat datagram of the session
  bool udp_deaf_sent = false;  // told the coordinator its datagrams do not reach us
  bool udp_confirmed = false;  // a Heartbeat with udp_seq came, and no udp_lost since
  int64_t hb_interval = 1000;
  int64_t misses = 3;
  int64_t coord_period = 1000;  // the coordinator is given up after misses x this of silence
  std::string current, previous;
  std::unordered_map<std::string, proto::Report> done;
  std::unordered_set<std::string> in_progress;
  std::vector<Held> held;
};

struct RolloutStats {
  uint64_t orders = 0, reports = 0;
  int64_t first_order_us = 0, last_report_us = 0;
};
struct SignalStats {
  uint64_t count = 0;
  int64_t first_us = 0, last_us = 0;
};
struct EpochStats {
  uint64_t agents = 0;  // agents whose newest welcome carries this epoch
  int64_t first_us = 0, last_us = 0;
};

class Fleet {
 public:
  explicit Fleet(Options o) : o_(std::move(o)), ctx_(o_.io_threads), rng_(std::random_device{}()) {
    ctx_.set(zmq::ctxopt::max_sockets, 30000);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (o_.raw_sub) raw_peer_ = parse_addr(o_.pub_endpoint.substr(o_.pub_endpoint.find("://") + 3));
    if (o_.raw_dealer) dealer_peer_ = parse_addr(o_.endpoint.substr(o_.endpoint.find("://") + 3));
    agents_.resize(static_cast<size_t>(o_.agents));
    for (int i = 0; i < o_.agents; ++i) {
      agents_[i].id = sim_host_id(o_.prefix, o_.first + i);
      agents_[i].current = o_.version;
      agents_[i].curve = o_.socket.curve;
      if (!o_.curve_seed.empty()) {
        SimKeyPair kp = sim_keypair(o_.curve_seed, agents_[i].id);
        agents_[i].curve.public_key = kp.public_z85;
        agents_[i].curve.secret_key = kp.secret_z85;
      }
    }
  }
  ~Fleet() {
    for (auto& a : agents_) {
      a.monitor.reset();
      a.dealer.reset();
      a.rdealer.reset();
      a.sub.reset();
      a.rsub.reset();
    }
    ::close(ep_);
  }

  int run() {
    int64_t start = mono_ms(), deadline = start + static_cast<int64_t>(o_.duration_s) * 1000;
    int64_t next_stats = start, next_sweep = start, next_timers = start;
    size_t opened = 0;
    std::vector<epoll_event> evs(1024);
    while (!g_stop && mono_ms() < deadline) {
      int64_t now = mono_ms();
      // Open agents (all at once, or at a bounded rate).
      size_t want =
          o_.connect_per_ms > 0
              ? std::min(agents_.size(), static_cast<size_t>(static_cast<double>(now - start + 1) * o_.connect_per_ms))
              : agents_.size();
      while (opened < want) open_agent(opened++);
      while (g_kill > 0) {
        g_kill--;
        kill_one();
      }
      int n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 20);
      for (int i = 0; i < n; ++i) {
        uint64_t key = evs[i].data.u64;
        size_t idx = key >> 2;
        switch (key & 3) {
          case kKeyDealer:
            if (agents_[idx].rdealer)
              on_raw_dealer(idx, evs[i].events);
            else
              drain_dealer(idx);
            break;
          case kKeySub:
            drain_sub(idx);
            break;
          case kKeyMonitor:
            drain_monitor(idx);
            break;
          default:
            on_raw_sub(idx, evs[i].events);
            break;
        }
      }
      now = mono_ms();
      run_due(now);
      drain_sent();
      // ZMQ_FD is edge-like, and a send can take the edge of a message that arrived meanwhile:
      // drain_sent() reads every socket sent on; this sweep only catches what slips through.
      // Each socket's check is a poll() of its mailbox, so it runs once a second (5 times a
      // second, it was a quarter of the simulators' CPU at rest and in a reconnect storm).
      if (now >= next_sweep) {
        next_sweep = now + 1000;
        for (size_t i = 0; i < agents_.size(); ++i) {
          drain_dealer(i);
          drain_sub(i);
          drain_monitor(i);
        }
      }
      if (now >= next_timers) {  // heartbeats and liveness: 10 ms resolution is plenty
        next_timers = now + 10;
        drain_udp(now);
        timers(now);
        drain_sent();
      }
      if (now >= next_stats) {
        next_stats = now + o_.stats_ms;
        emit(stats());
      }
    }
    // Each agent's first welcome of its current epoch, for per-agent reconnect percentiles.
    std::map<uint64_t, std::vector<int64_t>> welcomes;
    for (const auto& a : agents_)
      if (a.epoch != 0 && a.welcome_us != 0) welcomes[a.epoch].push_back(a.welcome_us);
    for (const auto& [e, us] : welcomes) emit({{"ev", "welcomes"}, {"epoch", e}, {"us", us}});
    auto s = stats();
    s["final"] = true;
    emit(s);
    return 0;
  }

 private:
  // epoll keys: agent index << 2 | socket kind
  static constexpr uint64_t kKeyDealer = 0, kKeySub = 1, kKeyRawSub = 2, kKeyMonitor = 3;

  void watch(zmq::socket_t& s, uint64_t key) {
    int fd = s.get(zmq::sockopt::fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  void unwatch(zmq::socket_t& s) {
    int fd = s.get(zmq::sockopt::fd);
    epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
  }

  void open_agent(size_t i) {
    Agent& a = agents_[i];
    a.opened = true;
    if (!o_.pub_endpoint.empty() && o_.raw_sub) {
      a.rsub = std::make_unique<ZmtpSub>(ep_, (i << 2) | kKeyRawSub, raw_peer_,
                                         static_cast<size_t>(o_.socket.max_msg_size), &raw_, rng_());
      a.rsub->open();
    } else if (!o_.pub_endpoint.empty()) {
      a.sub = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::sub);
      transport::SocketOptions so = o_.socket;
      so.curve = a.curve;
      transport::configure(*a.sub, so);
      a.sub->set(zmq::sockopt::subscribe, "");
      a.sub->connect(o_.pub_endpoint);
      watch(*a.sub, (i << 2) | kKeySub);
    }
    if (!o_.no_dealer) open_dealer(i);
  }

  void open_dealer(size_t i) {
    Agent& a = agents_[i];
    if (o_.raw_dealer ? open_raw_dealer(i) : open_zmq_dealer(i)) {
      a.last_heard = mono_ms();
      a.welcomed = false;
      a.heard = false;
      a.coord_period = a.hb_interval;  // as the real agent: until welcomed, our own interval
      connects_++;
      send_hello(a);
    }
  }

  bool open_zmq_dealer(size_t i) {
    Agent& a = agents_[i];
    a.dealer = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    transport::SocketOptions so = o_.socket;
    so.curve = a.curve;
    // As the real agent (agent/net/session.cc): without CURVE the coordinator knows us by
    // routing id; with CURVE by our key, and the ROUTER gives each connection a fresh id.
    if (!so.curve.enabled()) so.routing_id = a.id;
    transport::configure(*a.dealer, so);
    if (o_.udp_heartbeats) {
      const std::string mep = "inproc://sim-dealer-" + std::to_string(i) + "-" + std::to_string(++monitor_seq_);
      if (zmq_socket_monitor(a.dealer->handle(), mep.c_str(), ZMQ_EVENT_DISCONNECTED) == 0) {
        a.monitor = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
        a.monitor->set(zmq::sockopt::linger, 0);
        a.monitor->connect(mep);
        watch(*a.monitor, (i << 2) | kKeyMonitor);
      }
    }
    a.dealer->connect(o_.endpoint);
    watch(*a.dealer, (i << 2) | kKeyDealer);
    return true;
  }

  // The raw CURVE client instead: the hello waits in it until READY, and its libzmq-like
  // reconnects (poll_reconnect in timers) keep the agent's object.
  bool open_raw_dealer(size_t i) {
    Agent& a = agents_[i];
    CurveKeys k{};
    if (zmq_z85_decode(k.public_key, a.curve.public_key.c_str()) == nullptr ||
        zmq_z85_decode(k.secret_key, a.curve.secret_key.c_str()) == nullptr ||
        zmq_z85_decode(k.server_key, a.curve.server_public_key.c_str()) == nullptr) {
      send_fail_++;
      return false;
    }
    a.rdealer = std::make_unique<CurveDealer>(ep_, (i << 2) | kKeyDealer, dealer_peer_, k,
                                              static_cast<size_t>(o_.socket.max_msg_size), o_.socket.reconnect_ivl_ms,
                                              o_.socket.reconnect_ivl_max_ms, &rdeal_, rng_());
    sodium_memzero(&k, sizeof k);
    a.rdealer->open();
    return true;
  }

  void on_raw_dealer(size_t i, uint32_t events) {
    Agent& a = agents_[i];
    a.rdealer->on_events(
        events, [this, i](std::string_view body) { on_frame(i, std::string(body)); },
        [this, i] { on_connection_dropped(i); });  // libzmq's DISCONNECTED, for a raw client
  }

  bool has_dealer(const Agent& a) const { return a.dealer || a.rdealer; }

  void close_dealer(Agent& a) {
    if (!has_dealer(a)) return;
    drop_monitor(a);
    if (a.dealer) unwatch(*a.dealer);
    a.dealer.reset();
    a.rdealer.reset();
    end_udp_session(a);  // the next connection says hello and gets a new one
    a.silent_in_row = a.heard ? 0 : a.silent_in_row + 1;
    std::uniform_real_distribution<double> d(0.8, 1.2);
    a.reconnect_at = mono_ms() + std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(a.backoff) * d(rng_)));
    a.backoff = std::min<int64_t>(a.backoff * 2, 5000);
    reconnects_++;
  }

  void kill_one() {
    for (auto& a : agents_) {
      if (a.dead || !has_dealer(a)) continue;
      a.dead = true;
      drop_monitor(a);
      if (a.dealer) unwatch(*a.dealer);
      a.dealer.reset();
      a.rdealer.reset();
      end_udp_session(a);
      if (a.sub) {
        unwatch(*a.sub);
        a.sub.reset();
      }
      a.rsub.reset();
      emit({{"ev", "killed"}, {"host", a.id}, {"last_sent_us", a.last_sent_us}, {"at_us", wall_us()}});
      return;
    }
  }

  void send(size_t i, const proto::Message& m) {
    Agent& a = agents_[i];
    if (a.rdealer) {
      if (!a.rdealer->send(proto::encode(m))) {
        send_fail_++;
        return;
      }
      a.last_sent = mono_ms();
      a.last_sent_us = wall_us();
      return;
    }
    if (!a.dealer) return;
    if (!transport::send(*a.dealer, m).ok()) {
      send_fail_++;
      return;
    }
    a.last_sent = mono_ms();
    a.last_sent_us = wall_us();
    sent_.push_back(i);
  }

  // Reads the DEALERs sent on since the last call (their ZMQ_FD may not signal what arrived
  // while the send ran). Replies sent while draining are read in the next pass; bounded.
  void drain_sent() {
    for (int pass = 0; pass < 4 && !sent_.empty(); ++pass) {
      std::vector<size_t> now;
      now.swap(sent_);
      std::sort(now.begin(), now.end());
      now.erase(std::unique(now.begin(), now.end()), now.end());
      for (size_t i : now) drain_dealer(i);
    }
  }

  proto::Hello hello(const Agent& a) const {
    proto::Hello h;
    h.host_id = a.id;
    h.agent_version = "fleet-sim";
    h.labels = {{"sim", "1"}};
    proto::ServiceStatus s;
    s.name = o_.service;
    s.current_version = a.current;
    s.previous_version = a.previous;
    s.state = a.in_progress.empty() ? "idle" : "updating";
    if (!a.in_progress.empty()) s.order_id = *a.in_progress.begin();
    h.services.push_back(s);
    h.capabilities = proto::kCapCoordinatorHeartbeat;  // as the real agent (agent/net/session.cc)
    if (o_.udp_heartbeats) h.capabilities |= proto::kCapUdpHeartbeat;
    return h;
  }

  void send_hello(Agent& a) {
    size_t i = static_cast<size_t>(&a - agents_.data());
    hellos_++;
    send(i, hello(a));
  }

  void drain_dealer(size_t i) {
    for (int k = 0; k < 256 && agents_[i].dealer; ++k) {
      bool dropped = false;
      auto f = transport::recv_frame(*agents_[i].dealer, &dropped);
      if (!f) {
        if (dropped) continue;
        return;
      }
      on_frame(i, *f);
    }
  }

  void drop_monitor(Agent& a) {
    if (!a.monitor) return;
    unwatch(*a.monitor);
    a.monitor.reset();
  }

  void drain_monitor(size_t i) {
    Agent& a = agents_[i];
    if (a.monitor && transport::monitor_saw(*a.monitor, ZMQ_EVENT_DISCONNECTED)) on_connection_dropped(i);
  }

  // As the real agent (agent/net/session.cc on_monitor_event): the session ends, a Hello waits.
  void on_connection_dropped(size_t i) {
    Agent& a = agents_[i];
    if (a.udp_session == 0) return;
    end_udp_session(a);
    send_hello(a);
  }

  void drain_sub(size_t i) {
    for (int k = 0; k < 256 && agents_[i].sub; ++k) {
      bool dropped = false;
      auto f = transport::recv_frame(*agents_[i].sub, &dropped);
      if (!f) {
        if (dropped) continue;
        return;
      }
      int64_t t = wall_us();
      auto m = proto::decode(*f);
      if (!m) continue;
      if (auto* s = std::get_if<proto::Signal>(&*m)) on_signal(i, *s, t);
    }
  }

  void on_raw_sub(size_t i, uint32_t events) {
    Agent& a = agents_[i];
    if (!a.rsub) return;
    // As drain_sub: every single-frame message decoded with the codec, Signals recorded.
    a.rsub->on_events(events, [this, i](std::string_view body, int64_t t) {
      auto m = proto::decode(body);
      if (!m) return;
      if (auto* s = std::get_if<proto::Signal>(&*m)) on_signal(i, *s, t);
    });
  }

  void on_frame(size_t i, const std::string& bytes) {
    Agent& a = agents_[i];
    int64_t now = mono_ms();
    a.last_heard = now;
    a.heard = true;
    frames_in_++;
    auto m = proto::decode(bytes);
    if (!m) {
      bad_frames_++;
      return;
    }
    if (auto* w = std::get_if<proto::Welcome>(&*m)) {
      int64_t t = wall_us();
      a.hb_interval = w->heartbeat_interval_ms;
      a.misses = w->heartbeat_misses;
      a.coord_period = w->coordinator_heartbeat_ms ? w->coordinator_heartbeat_ms : w->heartbeat_interval_ms;
      a.backoff = 100;
      if (!a.welcomed || a.epoch != w->epoch) {
        if (a.epoch != w->epoch) {
          if (a.epoch != 0 && epochs_[a.epoch].agents > 0) epochs_[a.epoch].agents--;
          auto& e = epochs_[w->epoch];
          e.agents++;
          if (e.first_us == 0) e.first_us = t;
          e.last_us = std::max(e.last_us, t);
          a.welcome_us = t;
        }
        a.epoch = w->epoch;
      }
      a.welcomed = true;
      start_udp_session(a, *w);
    } else if (auto* hb = std::get_if<proto::Heartbeat>(&*m)) {
      hb_in_++;
      if (a.udp_session != 0 && hb->udp_seq > 0 && !a.udp_confirmed) {
        a.udp_confirmed = true;
        udp_confirms_++;
      }
      if (a.udp_session != 0 && hb->udp_lost) {
        a.udp_confirmed = false;
        udp_lost_++;
      }
    } else if (auto* o = std::get_if<proto::Order>(&*m)) {
      on_order(i, *o);
    } else if (auto* e = std::get_if<proto::ErrorMsg>(&*m)) {
      if (e->code == "hello_required") {
        hello_required_++;
        send_hello(a);
      } else {
        errors_in_++;
      }
    }
  }

  void on_order(size_t i, const proto::Order& o) {
    Agent& a = agents_[i];
    orders_in_++;
    if (auto d = a.done.find(o.order_id); d != a.done.end()) {
      send(i, proto::OrderAck{o.order_id, "duplicate", "already finished: " + d->second.outcome});
      send(i, d->second);
      return;
    }
    if (a.in_progress.count(o.order_id)) {
      send(i, proto::OrderAck{o.order_id, "duplicate", "in progress"});
      return;
    }
    a.in_progress.insert(o.order_id);
    auto& rs = rollouts_[o.rollout_id];
    rs.orders++;
    if (rs.first_order_us == 0) rs.first_order_us = wall_us();
    send(i, proto::OrderAck{o.order_id, "accepted", ""});
    if (o_.hold_updates && o.kind == "update") {
      a.held.push_back({o});
      return;
    }
    int64_t delay = o_.swap_ms + o_.verify_ms;
    if (delay <= 0) {
      finish(i, o);
    } else {
      due_.emplace(mono_ms() + delay, std::make_pair(i, o));
    }
  }

  void finish(size_t i, const proto::Order& o) {
    Agent& a = agents_[i];
    if (!has_dealer(a) && a.dead) return;
    if (a.current != o.version) {
      a.previous = a.current;
      a.current = o.version;
    }
    proto::Report r;
    r.order_id = o.order_id;
    r.rollout_id = o.rollout_id;
    r.service = o.service;
    r.outcome = "succeeded";
    r.running_version = a.current;
    r.timings_ms = {{"swap", static_cast<uint64_t>(o_.swap_ms)},
                    {"verify", static_cast<uint64_t>(o_.verify_ms)},
                    {"total", static_cast<uint64_t>(o_.swap_ms + o_.verify_ms)}};
    a.in_progress.erase(o.order_id);
    a.done[o.order_id] = r;
    send(i, r);
    auto& rs = rollouts_[o.rollout_id];
    rs.reports++;
    rs.last_report_us = wall_us();
    reports_++;
  }

  void on_signal(size_t i, const proto::Signal& s, int64_t t) {
    auto& st = signals_[s.rollout_id];
    st.count++;
    if (st.first_us == 0 || t < st.first_us) st.first_us = t;
    st.last_us = std::max(st.last_us, t);
    // Like the real agent: queued, not yet started orders of that rollout are cancelled.
    Agent& a = agents_[i];
    std::vector<Held> keep;
    for (auto& h : a.held) {
      if (h.order.rollout_id != s.rollout_id || h.order.service != s.service) {
        keep.push_back(std::move(h));
        continue;
      }
      proto::Report r;
      r.order_id = h.order.order_id;
      r.rollout_id = h.order.rollout_id;
      r.service = h.order.service;
      r.outcome = "failed";
      r.running_version = a.current;
      r.message = "cancelled by " + s.kind + " signal";
      a.in_progress.erase(r.order_id);
      a.done[r.order_id] = r;
      send(i, r);
    }
    a.held = std::move(keep);
  }

  void run_due(int64_t now) {
    while (!due_.empty() && due_.begin()->first <= now) {
      auto [i, o] = due_.begin()->second;
      due_.erase(due_.begin());
      finish(i, o);
    }
  }

  void timers(int64_t now) {
    for (size_t i = 0; i < agents_.size(); ++i) {
      Agent& a = agents_[i];
      if (a.rsub && !a.dead) a.rsub->poll_reconnect(now);
      if (!a.opened || a.dead || o_.no_dealer) continue;
      if (a.rdealer) a.rdealer->poll_reconnect(now);
      if (has_dealer(a)) {
        if (now - a.last_heard >=
            transport::silence_limit_ms(a.welcomed, a.coord_period, static_cast<uint32_t>(a.misses), a.silent_in_row)) {
          timeouts_++;
          close_dealer(a);
        } else if (now - a.last_sent >= a.hb_interval) {
          heartbeat(i, now);
          drain_dealer(i);
        }
        // As the real agent: confirmed, and the coordinator's heartbeat two intervals overdue.
        if (has_dealer(a) && a.udp_confirmed && !a.udp_deaf_sent &&
            now - a.last_heard > a.coord_period + 2 * a.hb_interval) {
          a.udp_deaf_sent = true;
          udp_deaf_++;
          proto::Heartbeat deaf{++a.hb_seq};
          deaf.udp_deaf = true;
          send(i, deaf);
        }
      } else if (now >= a.reconnect_at) {
        open_dealer(i);
      }
    }
  }

  // A Welcome starts a new UDP session (seq from 1, unconfirmed), or ends the old one if it
  // offers none. Every agent sends through the process's one socket for that port: the
  // coordinator tells hosts apart by session, not by source address.
  void start_udp_session(Agent& a, const proto::Welcome& w) {
    end_udp_session(a);
    if (!o_.udp_heartbeats || w.udp_session == 0) return;
    const auto port = static_cast<uint16_t>(w.udp_port);
    udp_hb::Sender& s = senders_[port];
    if (!s.is_open()) {
      if (Status st = s.open(o_.endpoint, port); !st.ok()) {
        // Heartbeats stay on the connection; the next Welcome tries again.
        udp_open_fail_++;
        if (udp_open_fail_ == 1) std::cerr << "gantry-fleet-sim agents: UDP heartbeats: " << st.error().message << "\n";
        return;
      }
      // One socket receives the coordinator's heartbeats for every agent of the process (a real
      // agent's gets one per period): room for a few of the loop's stalls at 10,000 a second.
      int want = 4 << 20;
      if (::setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
        (void)::setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    }
    a.udp_session = w.udp_session;
    a.udp_port = port;
    a.udp_key = w.udp_key;
    a.udp_heard_seq = 0;
    a.udp_deaf_sent = false;
    by_session_[a.udp_session] = static_cast<size_t>(&a - agents_.data());
    udp_sessions_++;
  }

  // The coordinator's heartbeat datagrams, for every agent of the process on its one socket:
  // a valid one of an agent's session is life from the coordinator, as for the real agent.
  void drain_udp(int64_t now) {
    unsigned char buf[64];
    for (auto& [port, s] : senders_) {
      for (int k = 0; k < 20000 && s.is_open(); ++k) {
        const ssize_t n = ::recv(s.fd(), buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) break;
        udp_hb::Header h;
        auto it = by_session_.end();
        if (udp_hb::parse(buf, static_cast<std::size_t>(n), &h, udp_hb::From::kCoordinator) == udp_hb::Reject::kNone)
          it = by_session_.find(h.session);
        Agent* a = it == by_session_.end() ? nullptr : &agents_[it->second];
        if (!a || a->udp_session != h.session || !udp_hb::authentic(buf, a->udp_key) || h.seq <= a->udp_heard_seq) {
          udp_in_bad_++;
          continue;
        }
        a->udp_heard_seq = h.seq;
        a->last_heard = now;
        udp_in_++;
      }
    }
  }

  void end_udp_session(Agent& a) {
    if (a.udp_session != 0) by_session_.erase(a.udp_session);
    a.udp_session = 0;
    a.udp_key.clear();
    a.udp_seq = 0;
    a.udp_confirmed = false;
  }

  // The agent rule: the datagram whenever there is a session, the ZMTP heartbeat too until the
  // session is confirmed. A failed datagram (ECONNREFUSED after an ICMP, ENOBUFS) is counted
  // and waits for the next interval like a sent one: the coordinator's udp_lost brings the
  // connection back into use if they keep failing.
  void heartbeat(size_t i, int64_t now) {
    Agent& a = agents_[i];
    if (a.udp_session != 0) {
      if (senders_[a.udp_port].send(a.udp_session, ++a.udp_seq, a.udp_key).ok()) {
        udp_out_++;
        a.last_sent_us = wall_us();
      } else {
        udp_send_fail_++;
      }
      a.last_sent = now;
      if (a.udp_confirmed) return;
    }
    hb_out_++;
    send(i, proto::Heartbeat{++a.hb_seq});
  }

  nlohmann::json stats() const {
    uint64_t connected = 0, welcomed = 0, held = 0, raw_ready = 0, udp_now = 0, udp_confirmed_now = 0;
    for (const auto& a : agents_) {
      if (a.rsub && a.rsub->ready()) raw_ready++;
      if (a.udp_session != 0) udp_now++;
      if (a.udp_confirmed) udp_confirmed_now++;
      if (a.dealer || (a.rdealer && a.rdealer->ready())) connected++;
      if (has_dealer(a) && a.welcomed) welcomed++;
      held += a.held.size();
    }
    nlohmann::json ro = nlohmann::json::object(), sig = nlohmann::json::object(), ep = nlohmann::json::object();
    for (const auto& [id, r] : rollouts_)
      ro[std::to_string(id)] = {{"orders", r.orders},
                                {"reports", r.reports},
                                {"first_order_us", r.first_order_us},
                                {"last_report_us", r.last_report_us}};
    for (const auto& [id, s] : signals_)
      sig[std::to_string(id)] = {{"count", s.count}, {"first_us", s.first_us}, {"last_us", s.last_us}};
    for (const auto& [e, s] : epochs_)
      ep[std::to_string(e)] = {{"agents", s.agents}, {"first_us", s.first_us}, {"last_us", s.last_us}};
    return {{"ev", "stats"},
            {"at_us", wall_us()},
            {"agents", agents_.size()},
            {"connected", connected},
            {"welcomed", welcomed},
            {"held", held},
            {"hellos", hellos_},
            {"hello_required", hello_required_},
            {"connects", connects_},
            {"reconnects", reconnects_},
            {"timeouts", timeouts_},
            {"hb_out", hb_out_},
            {"hb_in", hb_in_},
            {"frames_in", frames_in_},
            {"orders_in", orders_in_},
            {"reports", reports_},
            {"send_fail", send_fail_},
            {"bad_frames", bad_frames_},
            {"errors_in", errors_in_},
            {"rollouts", ro},
            {"signals", sig},
            {"epochs", ep},
            // UDP heartbeats: datagrams sent and failed, sessions offered / open now, confirmations
            // and udp_lost received, agents confirmed now, Sender sockets that failed to open.
            {"udp_out", udp_out_},
            {"udp_in", udp_in_},
            {"udp_in_bad", udp_in_bad_},
            {"udp_deaf", udp_deaf_},
            {"udp_send_fail", udp_send_fail_},
            {"udp_sessions", udp_sessions_},
            {"udp_sessions_now", udp_now},
            {"udp_confirms", udp_confirms_},
            {"udp_lost", udp_lost_},
            {"udp_confirmed_now", udp_confirmed_now},
            {"udp_open_fail", udp_open_fail_},
            {"raw_sub",
             {{"ready_now", raw_ready},
              {"connects", raw_.connects},
              {"ready", raw_.ready},
              {"lost", raw_.lost},
              {"malformed", raw_.malformed},
              {"multipart_dropped", raw_.multipart_dropped},
              {"messages", raw_.messages},
              {"pings", raw_.pings},
              {"handshake_timeouts", raw_.handshake_timeouts}}},
            {"raw_dealer",
             {{"connects", rdeal_.connects},
              {"ready", rdeal_.ready},
              {"lost", rdeal_.lost},
              {"refused", rdeal_.refused},
              {"malformed", rdeal_.malformed},
              {"messages", rdeal_.messages},
              {"dropped", rdeal_.dropped},
              {"queue_full", rdeal_.queue_full}}}};
  }

  Options o_;
  zmq::context_t ctx_;
  int ep_ = -1;
  uint64_t monitor_seq_ = 0;
  std::vector<size_t> sent_;  // DEALERs sent on since the last drain_sent()
  std::vector<Agent> agents_;
  std::multimap<int64_t, std::pair<size_t, proto::Order>> due_;
  std::map<uint64_t, RolloutStats> rollouts_;
  std::map<uint64_t, SignalStats> signals_;
  std::map<uint64_t, EpochStats> epochs_;
  std::mt19937_64 rng_;
  sockaddr_in raw_peer_{};
  ZmtpCounters raw_;
  sockaddr_in dealer_peer_{};
  CurveDealerCounters rdeal_;
  std::map<uint16_t, udp_hb::Sender> senders_;  // by the Welcomes' udp_port: one in practice
  uint64_t hellos_ = 0, hello_required_ = 0, connects_ = 0, reconnects_ = 0, timeouts_ = 0, hb_out_ = 0, hb_in_ = 0,
           frames_in_ = 0, orders_in_ = 0, reports_ = 0, send_fail_ = 0, bad_frames_ = 0, errors_in_ = 0;
  uint64_t udp_out_ = 0, udp_send_fail_ = 0, udp_sessions_ = 0, udp_confirms_ = 0, udp_lost_ = 0, udp_open_fail_ = 0;
  uint64_t udp_in_ = 0, udp_in_bad_ = 0, udp_deaf_ = 0;
  std::unordered_map<uint32_t, size_t> by_session_;  // UDP session -> agent index
};

}  // namespace

SimKeyPair sim_keypair(const std::string& seed, const std::string& host_id) {
  static const bool ok = sodium_init() >= 0;
  (void)ok;
  unsigned char s[crypto_box_SEEDBYTES], pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
  std::string material = seed + "\n" + host_id;
  crypto_generichash(s, sizeof s, reinterpret_cast<const unsigned char*>(material.data()), material.size(), nullptr, 0);
  crypto_box_seed_keypair(pk, sk, s);
  char zp[41], zs[41];
  zmq_z85_encode(zp, pk, sizeof pk);
  zmq_z85_encode(zs, sk, sizeof sk);
  return {zp, zs};
}

std::string sim_host_id(const std::string& prefix, int index) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%05d", prefix.c_str(), index);
  return buf;
}

int run_keys(int argc, char** argv) {
  std::string seed, prefix = "sim-";
  int first = 0, count = 100;
  po::options_description desc(
      "gantry-fleet-sim keys: the simulated agents' CURVE public keys, `HOST KEY` per line.\nOptions");
  desc.add_options()("help,h", "show this help")("curve-seed", po::value(&seed),
                                                 "the seed given to `agents --curve-seed`")(
      "prefix", po::value(&prefix)->default_value(prefix), "host id prefix")(
      "first", po::value(&first)->default_value(first), "index of the first agent")(
      "count", po::value(&count)->default_value(count), "number of agents");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "gantry-fleet-sim keys: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (seed.empty()) {
    std::cerr << "gantry-fleet-sim keys: --curve-seed is required\n";
    return 2;
  }
  for (int i = first; i < first + count; ++i) {
    std::string host = sim_host_id(prefix, i);
    std::cout << host << " " << sim_keypair(seed, host).public_z85 << "\n";
  }
  return 0;
}

int run_agents(int argc, char** argv) {
  Options o;
  std::string server_key, client_pub, client_secret;
  po::options_description desc("gantry-fleet-sim agents: simulated agents against a real coordinator.\nOptions");
  desc.add_options()("help,h", "show this help")("endpoint", po::value(&o.endpoint),
                                                 "coordinator agent ROUTER endpoint (tcp://127.0.0.1:PORT)")(
      "pub-endpoint", po::value(&o.pub_endpoint), "coordinator PUB endpoint (empty: no SUB sockets)")(
      "agents", po::value(&o.agents)->default_value(o.agents), "simulated agents in this process")(
      "first", po::value(&o.first)->default_value(o.first), "index of the first agent (host ids PREFIX%05d)")(
      "prefix", po::value(&o.prefix)->default_value(o.prefix), "host id prefix")(
      "service", po::value(&o.service)->default_value(o.service), "the one service every agent runs")(
      "version", po::value(&o.version)->default_value(o.version), "release every agent runs at start")(
      "swap-ms", po::value(&o.swap_ms)->default_value(0), "simulated swap time per order")(
      "verify-ms", po::value(&o.verify_ms)->default_value(0), "simulated verification time per order")(
      "hold-updates", po::bool_switch(&o.hold_updates), "queue update orders until a signal cancels them")(
      "no-dealer", po::bool_switch(&o.no_dealer), "SUB sockets only (broadcast listeners)")(
      "raw-sub", po::bool_switch(&o.raw_sub),
      "the SUB side as a raw ZMTP 3.0 subscriber on a plain TCP socket "
      "(bench/zmtp_sub.h; plaintext, tcp://IPv4:PORT only; the DEALER stays libzmq)")(
      "raw-dealer", po::bool_switch(&o.raw_dealer),
      "the DEALER as a raw ZMTP 3.0 + CURVE client on a plain TCP socket "
      "(bench/zmtp_curve_dealer.h; CURVE, tcp://IPv4:PORT only)")(
      "udp-heartbeats", po::value(&o.udp_heartbeats)->default_value(o.udp_heartbeats),
      "1: announce UDP heartbeats and, given a session in the Welcome, heartbeat with datagrams as the real agent "
      "(one UDP socket per process); 0: every heartbeat over the connection")(
      "io-threads", po::value(&o.io_threads)->default_value(o.io_threads), "zmq io threads")(
      "stats-ms", po::value(&o.stats_ms)->default_value(o.stats_ms), "print a stats line this often")(
      "duration-s", po::value(&o.duration_s)->default_value(o.duration_s), "exit after this long at the latest")(
      "connect-per-ms", po::value(&o.connect_per_ms)->default_value(0),
      "open at most this many agents per ms (0: all at once; may be a fraction)")(
      "server-public-key", po::value(&server_key), "CURVE: the coordinator's public key (Z85)")(
      "client-public-key", po::value(&client_pub), "CURVE: the simulated agents' public key (Z85)")(
      "client-secret-key", po::value(&client_secret), "CURVE: the simulated agents' secret key (Z85), one for all")(
      "curve-seed", po::value(&o.curve_seed),
      "CURVE: each agent's own key pair, derived from this seed and its host id "
      "(enroll them with `gantry-fleet-sim keys` | gantry keys accept-file)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "gantry-fleet-sim agents: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (o.endpoint.empty() && !o.no_dealer) {
    std::cerr << "gantry-fleet-sim agents: --endpoint is required\n";
    return 2;
  }
  if (o.raw_sub && (o.pub_endpoint.rfind("tcp://", 0) != 0 || !client_pub.empty() || !o.curve_seed.empty())) {
    std::cerr << "gantry-fleet-sim agents: --raw-sub needs a plaintext tcp:// --pub-endpoint\n";
    return 2;
  }
  if (o.raw_dealer && (o.endpoint.rfind("tcp://", 0) != 0 || server_key.empty())) {
    std::cerr << "gantry-fleet-sim agents: --raw-dealer needs a tcp:// --endpoint and --server-public-key\n";
    return 2;
  }
  // The same bounded options as the real agent's sockets (PROTOCOL.md §1).
  o.socket.send_hwm = 1000;
  o.socket.recv_hwm = 1000;
  o.socket.max_msg_size = 2 * 1024 * 1024;
  if (!o.curve_seed.empty() && server_key.empty()) {
    std::cerr << "gantry-fleet-sim agents: --curve-seed needs --server-public-key\n";
    return 2;
  }
  o.socket.curve.server_public_key = server_key;
  o.socket.curve.public_key = client_pub;
  o.socket.curve.secret_key = client_secret;
  std::signal(SIGTERM, on_term);
  std::signal(SIGINT, on_term);
  std::signal(SIGUSR1, on_usr1);
  std::signal(SIGPIPE, SIG_IGN);
  Fleet f(o);
  return f.run();
}

}  // namespace gantry::bench
