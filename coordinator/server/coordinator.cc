#include "coordinator/server/coordinator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/protocol/codec.h"
#include "common/release/manifest.h"
#include "common/security/keys.h"
#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/util/names.h"
#include "coordinator/http/http_server.h"
#include "coordinator/rollout/json_text.h"
#include "coordinator/rollout/planner.h"
#include "coordinator/server/metrics.h"

namespace gantry::coordinator {

namespace {

// Looked up once: log::get takes a lock and a registry lookup, and these run per report.
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
spdlog::logger* LR() {
  static const auto l = log::get("rollout");
  return l.get();
}
spdlog::logger* LO() {
  static const auto l = log::get("operator");
  return l.get();
}

// Raised by operator handlers for a bad request; becomes an error reply.
struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string arg_str(const nlohmann::json& a, const char* k, bool required = true) {
  if (!a.contains(k) || a[k].is_null()) {
    if (required) throw OpError(std::string("missing argument: ") + k);
    return {};
  }
  if (!a[k].is_string()) throw OpError(std::string("argument ") + k + " must be a string");
  return a[k].get<std::string>();
}

std::string arg_name(const nlohmann::json& a, const char* k, bool required = true) {
  std::string v = arg_str(a, k, required);
  if (!v.empty() && !is_safe_name(v)) throw OpError(std::string("argument ") + k + " is not a valid name: " + v.substr(0, 64));
  return v;
}

uint64_t arg_u64(const nlohmann::json& a, const char* k, bool required = true) {
  if (!a.contains(k) || a[k].is_null()) {
    if (required) throw OpError(std::string("missing argument: ") + k);
    return 0;
  }
  if (!a[k].is_number_unsigned()) throw OpError(std::string("argument ") + k + " must be a non-negative integer");
  return a[k].get<uint64_t>();
}

// The stored body of an order: the JSON object order_from_json reads, keys in sorted order (the
// text nlohmann::json would dump), written without building a tree (one per ordered host).
std::string order_body(const proto::Order& o) {
  std::string out;
  out.reserve(256 + o.manifest.size() + o.signature.size());
  rollout::json_text::Object j(out);
  j.unum("healthy_deadline_ms", o.healthy_deadline_ms)
      .str("kind", o.kind)
      .str("manifest", o.manifest)
      .unum("min_healthy_ms", o.min_healthy_ms)
      .str("order_id", o.order_id)
      .unum("rollout_id", o.rollout_id)
      .str("service", o.service)
      .str("sha256", o.sha256)
      .str("signature", o.signature)
      .unum("size", o.size)
      .str("version", o.version)
      .close();
  return out;
}

proto::Order order_from_json(const nlohmann::json& j) {
  proto::Order o;
  o.order_id = j.at("order_id").get<std::string>();
  o.rollout_id = j.at("rollout_id").get<uint64_t>();
  o.service = j.at("service").get<std::string>();
  o.kind = j.at("kind").get<std::string>();
  o.version = j.at("version").get<std::string>();
  o.sha256 = j.at("sha256").get<std::string>();
  o.size = j.at("size").get<uint64_t>();
  o.min_healthy_ms = j.value("min_healthy_ms", 0u);
  o.healthy_deadline_ms = j.value("healthy_deadline_ms", 0u);
  o.manifest = j.value("manifest", std::string());
  o.signature = j.value("signature", std::string());
  return o;
}

}  // namespace

Coordinator::Coordinator(Config cfg, Clock& clock)
    : cfg_(std::move(cfg)), clock_(clock), ctx_(static_cast<int>(std::clamp<uint32_t>(cfg_.io_threads, 1, 16))), metrics_(std::make_unique<Metrics>()) {
  transport::configure_context(ctx_);
}

Coordinator::~Coordinator() {
  if (http_) http_->stop();
}

Status Coordinator::start() {
  if (auto s = fs::make_dirs(cfg_.state_dir, 0700); !s.ok()) return s;
  auto st = store::Store::open(cfg_.state_dir + "/coordinator.db");
  if (!st) return st.error();
  store_ = std::move(*st);
  auto ep = store_->bump_epoch();
  if (!ep) return ep.error();
  epoch_ = *ep;
  artifacts_ = std::make_unique<ArtifactStore>(cfg_.state_dir + "/artifacts");
  if (auto s = artifacts_->init(); !s.ok()) return s;

  started_ = clock_.now_ms();
  // Hosts known from before: online (with a grace period: restart_grace_ms, at least the heartbeat
  // timeout) until they say hello or stay silent past it.
  auto hosts = store_->hosts();
  if (!hosts) return hosts.error();
  for (const auto& h : *hosts) {
    fleet::HostRecord r;
    r.host_id = h.host_id;
    r.identity = h.host_id;
    for (auto& [k, v] : h.labels.items()) r.labels[k] = v.get<std::string>();
    for (const auto& s : h.services) {
      fleet::ServiceView v;
      v.current_version = s.value("current_version", "");
      v.previous_version = s.value("previous_version", "");
      r.services[s.value("name", "")] = v;
    }
    r.online = true;
    r.said_hello = false;
    r.last_seen = started_;
    r.grace_until = started_ + cfg_.restart_grace_ms;
    r.last_seen_wall = h.last_seen;
    r.first_seen_wall = h.first_seen;
    registry_.restore(std::move(r));
  }
  // Active rollouts and their open orders, exactly as last persisted.
  auto rows = store_->rollouts("", true, 1000);
  if (!rows) return rows.error();
  for (auto& row : *rows) {
    if (row.state.is_object() && row.state.empty()) {
      // Killed between creating the row and persisting its first step: nothing was ordered.
      L()->warn("rollout {} never started (the coordinator stopped first); marking it failed", row.id);
      store::StepWrite w;
      w.rollout_id = row.id;
      w.phase = "failed";
      w.state = nlohmann::json::object();
      w.finished_at = clock_.wall_ms();
      w.events.push_back({0, row.id, w.finished_at, "could not start: the coordinator stopped before the first step was saved"});
      if (auto s = store_->save_step(w); !s.ok()) return s;
      continue;
    }
    auto state = rollout::State::from_json(row.state);
    if (!state) return make_error("store", "rollout " + std::to_string(row.id) + ": " + state.error().message);
    L()->info("resuming rollout {} of {} to {} (phase {})", row.id, row.service, row.version, row.phase);
    Millis deadline = rollout::next_deadline(*state);
    active_[row.id] = ActiveRollout{row, std::move(*state), deadline};
  }
  auto orders = store_->open_orders();
  if (!orders) return orders.error();
  for (auto& o : *orders) {
    // Only orders of active rollouts are live; an ended rollout's order must never be re-sent.
    if (!active_.count(o.rollout_id)) {
      if (auto s = store_->close_orders(o.rollout_id); !s.ok()) return s;
      continue;
    }
    OpenOrder open{o, std::nullopt, 0};
    try {
      open.wire = order_from_json(nlohmann::json::parse(o.body));
    } catch (const std::exception& e) {
      L()->error("order {} is corrupt in the store: {}", o.order_id, e.what());
    }
    orders_[o.order_id] = std::move(open);
  }

  // Allowlists first: the ZAP handler answers from them as soon as a socket is bound.
  keys_ = std::make_unique<KeyRing>(*store_, clock_);
  if (auto s = keys_->load(); !s.ok()) return s;
  for (const auto& [name, key] : cfg_.admin_keys)
    if (auto s = keys_->bootstrap_operator(name, key, Role::kAdmin); !s.ok()) return s;
  for (const auto& [host, key] : cfg_.accept_agent_keys)
    if (auto s = keys_->bootstrap_agent(host, key); !s.ok()) return s;
  if (secure() && !keys_->has_admin())
    L()->warn("no admin operator key is enrolled: operators cannot manage keys (start with --admin-key FILE)");

  transport::SocketOptions agent_opts;
  agent_opts.router_mandatory = true;
  // Without CURVE the routing id is the host id, and a reconnecting agent takes it over. With
  // CURVE agents get random routing ids and are known by their key, so nobody can take over
  // another connection's id.
  agent_opts.router_handover = !secure();
  agent_opts.max_msg_size = 2 * 1024 * 1024;
  // 10,000 agents reconnecting after a restart (libzmq's default: 100). The kernel caps it at
  // net.core.somaxconn (4096 by default): a full queue drops SYNs, and agents wait out 1, 2, 4 s
  // SYN timers (docs/BENCHMARKS.md, figure 4), so a large fleet's host should raise that.
  agent_opts.backlog = 65535;
  agent_opts.curve = cfg_.curve;
  agent_opts.curve.server = true;
  agent_opts.curve.zap_domain = kZapDomainAgents;
  transport::SocketOptions op_opts = agent_opts;
  op_opts.max_msg_size = 4 * 1024 * 1024;
  op_opts.router_handover = false;
  op_opts.curve.zap_domain = kZapDomainOperators;
  transport::SocketOptions pub_opts;
  pub_opts.max_msg_size = 64 * 1024;  // subscribers only send subscriptions
  pub_opts.backlog = 65535;
  pub_opts.curve = cfg_.curve;
  pub_opts.curve.server = true;
  pub_opts.curve.zap_domain = kZapDomainPub;
  try {
    if (secure()) {
      // The ZAP handler lives in this loop; it is bound before any server socket so no
      // handshake ever finds it missing (and with ZAP_ENFORCE_DOMAIN a missing one refuses all).
      zap_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::rep);
      zap_->set(zmq::sockopt::linger, 0);
      zap_->bind("inproc://zeromq.zap.01");
    }
    agents_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    transport::configure(*agents_, agent_opts);
    if (Status st = transport::bind(*agents_, cfg_.agent_endpoint); !st.ok()) return make_error("bind", "agent endpoint: " + st.error().message);
    endpoints_["agent"] = agents_->get(zmq::sockopt::last_endpoint);
    if (Status st = open_udp_heartbeats(endpoints_["agent"]); !st.ok()) return st;
    pub_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pub);
    transport::configure(*pub_, pub_opts);
    // Subscribers on all I/O threads but the first (Config::io_threads); set before bind.
    if (int io = ctx_.get(zmq::ctxopt::io_threads); io > 1)
      pub_->set(zmq::sockopt::affinity, ((uint64_t{1} << io) - 1) & ~uint64_t{1});
    if (Status st = transport::bind(*pub_, cfg_.pub_endpoint); !st.ok()) return make_error("bind", "pub endpoint: " + st.error().message);
    endpoints_["pub"] = pub_->get(zmq::sockopt::last_endpoint);
    operators_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    transport::configure(*operators_, op_opts);
    if (Status st = transport::bind(*operators_, cfg_.operator_endpoint); !st.ok()) return make_error("bind", "operator endpoint: " + st.error().message);
    endpoints_["operator"] = operators_->get(zmq::sockopt::last_endpoint);
    if (secure()) {
      // libzmq refuses bad handshakes silently; these monitors make each refusal a log line.
      constexpr int kEvents = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                              ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
      auto monitor = [&](zmq::socket_t& s, const std::string& name) {
        std::string ep = "inproc://gantry-monitor-" + name;
        if (zmq_socket_monitor(s.handle(), ep.c_str(), kEvents) != 0) throw zmq::error_t();
        auto m = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
        m->set(zmq::sockopt::linger, 0);
        m->connect(ep);
        return m;
      };
      mon_agents_ = monitor(*agents_, "agents");
      mon_operators_ = monitor(*operators_, "operators");
    }
  } catch (const zmq::error_t& e) {
    return make_error("bind", std::string("cannot bind: ") + e.what());
  }
  if (!cfg_.http_address.empty()) {
    http_ = std::make_unique<HttpServer>(cfg_.http_address, [this](const std::string& path) {
      Published p = fresh_published();
      if (path == "/metrics") return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", p.metrics_text};
      if (path == "/status") return HttpResponse{200, "application/json", p.status_json};
      if (path == "/" || path == "/index.html") return HttpResponse{200, "text/html; charset=utf-8", status_page_html()};
      return HttpResponse{404, "text/plain", "not found\n"};
    });
    if (auto s = http_->start(); !s.ok()) return s;
    endpoints_["http"] = http_->bound_address();
  } else {
    endpoints_["http"] = "";
  }
  nlohmann::json ej(endpoints_);
  if (auto s = fs::write_file_atomic(cfg_.state_dir + "/endpoints.json", ej.dump() + "\n"); !s.ok()) return s;
  L()->info("coordinator epoch {} serving agents on {} (heartbeat datagrams: {}), broadcasts on {}, operators on {}, http on {}", epoch_,
            endpoints_["agent"], endpoints_["udp_heartbeat"].empty() ? "off" : "udp " + endpoints_["udp_heartbeat"], endpoints_["pub"],
            endpoints_["operator"], endpoints_["http"]);
  publish();
  return Status::Ok();
}

// Config::udp_heartbeat. "auto" follows the agent endpoint as bound (tcp://ADDR:PORT, the
// port resolved if it was a wildcard); a UDP port already taken there is not worth refusing to
// start over: the agents' connections carry heartbeats as ever, on any free UDP port instead.
Status Coordinator::open_udp_heartbeats(const std::string& agent_endpoint) {
  endpoints_["udp_heartbeat"] = "";
  if (cfg_.udp_heartbeat == "off") return Status::Ok();
  if (cfg_.heartbeat_misses < 2) {
    L()->info("UDP heartbeats off: they need --heartbeat-misses 2 or more (one interval to notice lost datagrams)");
    return Status::Ok();
  }
  const bool automatic = cfg_.udp_heartbeat == "auto";
  const auto hp = automatic ? transport::tcp_host_port(agent_endpoint) : transport::split_host_port(cfg_.udp_heartbeat);
  const std::string host = hp ? hp->host : "";
  const auto port = hp ? parse_port(hp->port) : std::nullopt;
  if (host.empty() || !port) {
    if (automatic) {
      L()->warn("UDP heartbeats off: cannot tell the address of agent endpoint {}", agent_endpoint);
      return Status::Ok();
    }
    return make_error("config", "--udp-heartbeat '" + cfg_.udp_heartbeat + "' is not HOST:PORT, auto or off");
  }
  udp_ = std::make_unique<transport::udp_hb::Receiver>();
  Status st = udp_->bind(host, static_cast<uint16_t>(*port));
  if (!st.ok() && automatic) {
    L()->warn("{}; UDP heartbeats use a free port instead", st.error().message);
    st = udp_->bind(host, 0);
  }
  if (!st.ok()) {
    udp_.reset();
    if (automatic) {
      L()->warn("UDP heartbeats off: {}", st.error().message);
      return Status::Ok();
    }
    return make_error("bind", "udp heartbeat: " + st.error().message);
  }
  endpoints_["udp_heartbeat"] = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(udp_->port());
  return Status::Ok();
}

// Heartbeat datagrams: each is checked (size, magic, a live session, its MAC, a sequence number
// beyond the last) before it counts as the host's traffic. The first of a session is confirmed
// on the host's connection, which lets the agent stop heartbeating there.
void Coordinator::drain_udp() {
  namespace uh = transport::udp_hb;
  const Millis now = clock_.now_ms(), wall = clock_.wall_ms();
  udp_->drain(kMaxDatagramsPerPass, [&](const unsigned char* data, std::size_t len, const uh::Peer& peer) {
    uh::Header hd;
    uh::Reject r = uh::parse(data, len, &hd);
    fleet::UdpSlot* slot = nullptr;
    if (r == uh::Reject::kNone && !(slot = registry_.udp_slot(hd.session))) r = uh::Reject::kUnknownSession;
    if (r == uh::Reject::kNone &&
        !uh::authentic(data, std::string_view(reinterpret_cast<const char*>(slot->key.data()), slot->key.size())))
      r = uh::Reject::kMac;
    if (r == uh::Reject::kNone && hd.seq <= slot->last_seq) r = uh::Reject::kReplay;
    if (r != uh::Reject::kNone) {
      metrics_->udp_rejected[static_cast<size_t>(r)]++;
      // After a restart every agent's old session is unknown here until its hello: expected.
      if (r != uh::Reject::kUnknownSession)
        warn_refused(std::string("udp:") + uh::reject_name(r),
                     std::string("heartbeat datagram dropped (") + uh::reject_name(r) + "); more are counted in gantry_udp_heartbeats_rejected_total");
      return;
    }
    slot->last_seq = hd.seq;
    slot->last_datagram = now;
    slot->peer = peer;  // follows the agent (a NAT may rebind it)
    fleet::HostRecord* h = slot->host;
    metrics_->udp_heartbeats++;
    if (!h->said_hello) {
      // Marked unknown (our loop stalled past the timeout?) while its connection lives on: a
      // host on UDP sends nothing else, so ask it for a hello as a stray heartbeat would be.
      ask_for_hello(h->identity, now, proto::MsgType::kHeartbeat);
      return;
    }
    h->last_seen = now;
    h->last_seen_wall = wall;
    if (!slot->confirmed) {
      slot->confirmed = true;
      proto::Heartbeat confirm{static_cast<uint64_t>(now)};
      confirm.udp_seq = hd.seq;
      send_to_host(h->identity, confirm);
    }
  });
}

Published Coordinator::published() const {
  std::lock_guard<std::mutex> lk(pub_mu_);
  return published_;
}

Published Coordinator::fresh_published() {
  const Millis now = clock_.now_ms();
  const Millis last_read = http_read_at_.exchange(now, std::memory_order_relaxed);
  std::unique_lock<std::mutex> lk(pub_mu_);
  // While nobody reads, events do not rebuild the snapshot, so after a quiet spell its content
  // can be older than its age says (the hosts that said hello since, a rollout started since):
  // the first request then asks for a new one too, as does any that finds it older than the
  // age limit. It waits for a snapshot built after it asked (at most 2 s; else the last one).
  if (now - last_read >= kWatchedMs || now - published_at_ > kStatusRefreshMs) {
    const uint64_t seen = published_seq_;
    refresh_wanted_.store(true);
    pub_cv_.wait_for(lk, std::chrono::seconds(2), [&] { return published_seq_ != seen; });
  }
  return published_;
}

void Coordinator::run(const std::atomic<bool>& stop) {
  next_heartbeat_ = clock_.now_ms();
  while (!stop) {
    loop_turns_.fetch_add(1, std::memory_order_relaxed);
    Millis turn = clock_.now_ms();
    const bool hold_agents = agents_at_rest_ && turn - last_agent_drain_ < kRestBatchMs;
    Millis timeout = poll_timeout_ms();
    if (hold_agents) timeout = std::min(timeout, last_agent_drain_ + kRestBatchMs - turn);
    // Heartbeat datagrams are held with the agents' heartbeats at rest (the same 10 ms batching).
    zmq::pollitem_t items[] = {{agents_->handle(), 0, static_cast<short>(hold_agents ? 0 : ZMQ_POLLIN), 0},
                               {operators_->handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, udp_ ? udp_->fd() : -1, static_cast<short>(hold_agents || !udp_ ? 0 : ZMQ_POLLIN), 0},
                               {zap_ ? zap_->handle() : nullptr, 0, ZMQ_POLLIN, 0},
                               {mon_agents_ ? mon_agents_->handle() : nullptr, 0, ZMQ_POLLIN, 0},
                               {mon_operators_ ? mon_operators_->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, zap_ ? 6 : 3, std::chrono::milliseconds(timeout));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      L()->error("poll failed: {}", e.what());
      continue;
    }
    if (zap_ && (items[3].revents & ZMQ_POLLIN)) drain_zap();
    if (zap_ && (items[4].revents & ZMQ_POLLIN)) drain_monitor(*mon_agents_, "agent");
    if (zap_ && (items[5].revents & ZMQ_POLLIN)) drain_monitor(*mon_operators_, "operator");
    const bool agent_pass = items[0].revents & ZMQ_POLLIN;
    if (agent_pass) drain_agents();
    if (items[2].revents & ZMQ_POLLIN) {
      drain_udp();
      // Datagrams are heartbeats only: a turn with nothing else keeps (or puts) the loop at
      // rest, with its batching clock, as a heartbeat-only pass over the agent socket does.
      if (!(agent_pass && agent_events_in_pass_)) {
        last_agent_drain_ = clock_.now_ms();
        agents_at_rest_ = active_.empty() && orders_.empty();
      }
    }
    if (!deferred_fetches_.empty()) serve_deferred_fetches();
    if (items[1].revents & ZMQ_POLLIN) drain_operators();
    on_timers();
    const Millis now = clock_.now_ms();
    const bool watched = now - http_read_at_.load(std::memory_order_relaxed) < kWatchedMs;
    // Snapshots are for readers of /status and /metrics: none is built while nobody reads (a
    // 10,000-host snapshot costs ~100 ms of this loop), and a stale one is rebuilt on demand.
    if (refresh_wanted_.load() || (watched && (dirty_ || now - last_publish_ >= kStatusRefreshMs))) publish();
  }
  L()->info("coordinator stopping");
}

Millis Coordinator::poll_timeout_ms() {
  Millis now = clock_.now_ms();
  Millis t = std::min<Millis>(100, std::max<Millis>(0, std::min(next_heartbeat_, next_expiry_) - now));
  if (!deferred_fetches_.empty()) t = std::min<Millis>(t, 1);  // the I/O thread frees budget silently
  Millis wall = clock_.wall_ms();
  for (auto& [id, a] : active_) {
    if (a.deadline > 0) t = std::min(t, std::max<Millis>(0, a.deadline - wall));
  }
  return t;
}

// ---- agents -----------------------------------------------------------------

void Coordinator::drain_agents() {
  agent_events_in_pass_ = false;
  last_agent_drain_ = clock_.now_ms();
  for (int i = 0; i < 10000; ++i) {
    bool dropped = false;
    auto in = transport::recv_routed(*agents_, &dropped);
    if (dropped) {
      metrics_->decode_errors++;
      L()->warn("dropped an agent message with a bad frame layout");
      continue;
    }
    if (!in) break;
    on_agent_message(*in);
  }
  flush_pending();
  // Never while a rollout runs or an order is open: a report must not wait for the batching.
  agents_at_rest_ = !agent_events_in_pass_ && active_.empty() && orders_.empty();
}

void Coordinator::flush_pending() {
  if (!pending_hosts_.empty()) {
    std::vector<store::HostRow> rows;
    rows.reserve(pending_hosts_.size());
    for (auto& [id, row] : pending_hosts_) rows.push_back(std::move(row));
    pending_hosts_.clear();
    if (auto s = store_->put_hosts(rows); !s.ok()) L()->error("{}", s.error().message);
  }
  if (pending_reports_.empty()) return;
  std::vector<PendingReport> batch;
  batch.swap(pending_reports_);
  Millis t0 = clock_.now_ms();
  pending_report_ids_.clear();
  // One step per rollout, events in arrival order.
  std::map<uint64_t, std::vector<size_t>> by_rollout;
  for (size_t i = 0; i < batch.size(); ++i) by_rollout[batch[i].rollout_id].push_back(i);
  for (auto& [rid, idx] : by_rollout) {
    std::vector<store::ResultRow> rows;
    std::vector<rollout::Event> evs;
    for (size_t i : idx)
      if (batch[i].row) rows.push_back(*batch[i].row);
    Status saved = Status::Ok();
    const bool applied = active_.count(rid) > 0;
    if (applied) {
      for (size_t i : idx) evs.push_back(batch[i].event);
      saved = apply_many(rid, evs, std::move(rows), nullptr, /*agent_reports=*/true);
    } else {
      for (const auto& row : rows) {
        if (auto s = store_->record_report(row); !s.ok()) saved = s;
      }
    }
    for (size_t i : idx) {
      const auto& p = batch[i];
      if (!p.row) {  // a host back: the step's own event line says it
        if (!saved.ok()) L()->error("cannot record that {} is back: {}", std::get<rollout::EvHostBack>(p.event).host_id, saved.error().message);
        continue;
      }
      if (!saved.ok()) {
        L()->error("cannot record report of {} for order {}: {}; it will be resent", p.row->host_id, p.row->order_id,
                   saved.error().message);
        continue;
      }
      orders_.erase(p.row->order_id);
      // Applied to an active rollout, the rollout's own event line ("<host> healthy on v2",
      // "<host> failed: ...") already says it at info: one line per report, not two.
      if (applied) L()->debug("{}", p.log_line);
      else L()->info("{}", p.log_line);
    }
  }
  L()->debug("group commit: {} report(s) in {} ms", batch.size(), clock_.now_ms() - t0);
}

void Coordinator::send_to_host(const std::string& identity, const proto::Message& m) {
  auto s = transport::send_to(*agents_, identity, m);
  metrics_->messages_out++;
  if (!s.ok()) {
    L()->debug("send {} to {} failed: {}", proto::type_name(proto::type_of(m)), identity, s.error().message);
    return;
  }
  // Any message counts as our heartbeat: the next one is due a full period after this.
  if (auto* h = registry_.by_identity(identity)) h->last_sent = clock_.now_ms();
}

Millis Coordinator::heartbeat_period(const fleet::HostRecord& h) const {
  if (h.coordinator_heartbeat && cfg_.coordinator_heartbeat_ms > 0)
    return std::max(cfg_.coordinator_heartbeat_ms, cfg_.heartbeat_interval_ms);
  return cfg_.heartbeat_interval_ms;
}

void Coordinator::on_agent_message(const transport::Incoming& in) {
  metrics_->messages_in++;
  // Anything but a greeted host's heartbeat (restored below) means the fleet is not at rest.
  const bool events_before = agent_events_in_pass_;
  agent_events_in_pass_ = true;
  // Authentication comes before decoding: the key (ZAP User-Id) is looked up in the current
  // allowlist on every message, so a revoked key stops at its next message.
  AgentStanding who;
  if (secure()) {
    who = keys_->agent(in.user_id);
    if (who.kind == AgentStanding::kRefused) {
      metrics_->auth_refused++;
      warn_refused(in.user_id, "agent key " + (in.user_id.empty() ? std::string("(none)") : in.user_id) + " is " + who.state +
                                   (who.host_id.empty() ? "" : " (host " + who.host_id + ")") + "; message refused");
      return;
    }
  }
  auto msg = proto::decode(in.payload);
  if (secure() && who.kind == AgentStanding::kPending) {
    // A pending key may only introduce itself; it gets no orders and sees nothing.
    auto* h = msg ? std::get_if<proto::Hello>(&*msg) : nullptr;
    if (!h) {
      if (!msg) metrics_->decode_errors++;
      warn_refused(in.user_id, "pending agent key " + in.user_id + " sent " +
                                   (msg ? std::string("a ") + proto::type_name(proto::type_of(*msg)) : "an undecodable frame (" + msg.error().message + ")") +
                                   " before enrollment; dropped");
      return;
    }
    keys_->note_claim(in.user_id, h->host_id);
    warn_refused(in.user_id, "pending agent key " + in.user_id + " says it is host " + h->host_id +
                                 "; waiting for an operator (gantry keys accept " + h->host_id + ")");
    send_to_host(in.identity, proto::ErrorMsg{"enrollment_pending", "this agent's key awaits enrollment: gantry keys accept " + h->host_id,
                                              static_cast<uint16_t>(proto::MsgType::kHello), ""});
    return;
  }
  if (!msg) {
    metrics_->decode_errors++;
    L()->warn("bad message from agent connection {:?}: {} ({})", in.identity.substr(0, 64), msg.error().message, msg.error().code);
    proto::ErrorMsg e{msg.error().code, msg.error().message, 0, ""};
    send_to_host(in.identity, e);
    return;
  }
  Millis now = clock_.now_ms(), wall = clock_.wall_ms();
  // Fixed dispatch table by type; only hello is accepted before a host is known.
  if (auto* h = std::get_if<proto::Hello>(&*msg)) {
    // Host identity is the authenticated key: a hello naming another host is refused.
    if (secure() && h->host_id != who.host_id) {
      metrics_->auth_refused++;
      L()->warn("agent key {} is enrolled for host {} but its hello claims host {}: spoofed host id, refused", in.user_id,
                who.host_id, h->host_id);
      send_to_host(in.identity, proto::ErrorMsg{"identity", "host id does not match the host enrolled for this key",
                                                static_cast<uint16_t>(proto::MsgType::kHello), ""});
      return;
    }
    on_hello(in.identity, *h);
    return;
  }
  fleet::HostRecord* touched = registry_.touch(in.identity, now, wall);
  if (!touched) {
    ask_for_hello(in.identity, now, proto::type_of(*msg));
    return;
  }
  fleet::HostRecord& host = *touched;
  if (secure() && host.host_id != who.host_id) {
    // The connection said hello as another host under a key since re-bound: start over.
    warn_refused(in.user_id, "connection of host " + host.host_id + " now speaks with the key of host " + who.host_id + "; refused");
    send_to_host(in.identity, proto::ErrorMsg{"hello_required", "say hello first", static_cast<uint16_t>(proto::type_of(*msg)), ""});
    return;
  }
  // A heartbeat changes only last_seen: it alone does not rebuild the status snapshot (that
  // costs tens of ms at 10,000 hosts); run() refreshes a stale snapshot every few seconds.
  if (!std::holds_alternative<proto::Heartbeat>(*msg)) dirty_ = true;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, proto::Heartbeat>) {
          // Any traffic counts; nothing more to do, unless our datagrams do not reach it.
          agent_events_in_pass_ = events_before;
          if (m.udp_deaf) {
            if (fleet::UdpSlot* slot = registry_.udp_slot(host.udp_session); slot && !slot->deaf) {
              slot->deaf = true;
              L()->info("{}: our heartbeat datagrams do not reach it; heartbeating it over its connection", host.host_id);
            }
          }
        } else if constexpr (std::is_same_v<T, proto::OrderAck>) {
          auto it = orders_.find(m.order_id);
          if (it == orders_.end() || it->second.row.host_id != host.host_id) return;
          if (!it->second.row.acked) {
            it->second.row.acked = true;
            metrics_->orders_acked++;
            pending_acks_.push_back(m.order_id);  // persisted within a heartbeat interval if still open (on_timers)
          }
          if (m.status == "rejected") L()->warn("{} rejected order {}: {}", host.host_id, m.order_id, m.message);
        } else if constexpr (std::is_same_v<T, proto::FetchChunk>) {
          on_fetch(in.identity, m);
        } else if constexpr (std::is_same_v<T, proto::Progress>) {
          for (auto& [name, svc] : host.services) {
            if (svc.order_id == m.order_id || svc.state != "idle") {
              svc.phase = m.phase;
              svc.phase_detail = m.detail;
            }
          }
          L()->debug("{} order {}: {} {}", host.host_id, m.order_id, m.phase, m.detail);
        } else if constexpr (std::is_same_v<T, proto::Report>) {
          on_report(host, m);
        } else if constexpr (std::is_same_v<T, proto::ErrorMsg>) {
          L()->warn("{} says error {}: {}", host.host_id, m.code, m.message);
        } else {
          L()->warn("{} sent a {} message, which agents may not send; ignored", host.host_id,
                    proto::type_name(proto::type_of(*msg)));
        }
      },
      *msg);
}

void Coordinator::on_hello(const std::string& identity, const proto::Hello& h) {
  if (h.protocol_version != proto::kProtocolVersion) {
    L()->warn("{} speaks protocol {}, we speak {}; refused", h.host_id, h.protocol_version, proto::kProtocolVersion);
    send_to_host(identity, proto::ErrorMsg{"protocol_version", "unsupported protocol version", static_cast<uint16_t>(proto::MsgType::kHello), ""});
    return;
  }
  // Without CURVE the identity is the host id the agent set as its routing id; a hello
  // claiming another host's id from this connection is refused. (With CURVE the key decides,
  // checked by the caller, and routing ids are random.)
  if (!secure() && identity != h.host_id) {
    L()->warn("hello for host {} from connection {:?}: identity mismatch, refused", h.host_id, identity.substr(0, 64));
    send_to_host(identity, proto::ErrorMsg{"identity", "host id does not match the connection identity", static_cast<uint16_t>(proto::MsgType::kHello), ""});
    return;
  }
  Millis now = clock_.now_ms(), wall = clock_.wall_ms();
  hello_asked_.erase(identity);
  bool was_offline = registry_.on_hello(h, identity, now, wall);
  dirty_ = true;
  metrics_->hellos++;
  const auto& rec = *registry_.find(h.host_id);
  store::HostRow row;
  row.host_id = h.host_id;
  row.labels = rec.labels;
  row.services = nlohmann::json::array();
  for (const auto& s : h.services) row.services.push_back({{"name", s.name}, {"current_version", s.current_version}, {"previous_version", s.previous_version}});
  row.first_seen = rec.first_seen_wall;
  row.last_seen = wall;
  pending_hosts_[row.host_id] = std::move(row);  // persisted at the end of this pass (flush_pending)
  L()->info("{} said hello ({}; {} service(s)){}", h.host_id, h.agent_version, h.services.size(), was_offline ? "" : " again");

  proto::Welcome w;
  w.heartbeat_interval_ms = cfg_.heartbeat_interval_ms;
  w.heartbeat_misses = cfg_.heartbeat_misses;
  w.epoch = epoch_;
  // Announced only to agents that said they honour it: an older agent would give us up after
  // misses x interval of silence and reconnect over and over.
  if (rec.coordinator_heartbeat && cfg_.coordinator_heartbeat_ms > 0) w.coordinator_heartbeat_ms = static_cast<uint32_t>(heartbeat_period(rec));
  // A fresh UDP heartbeat session per Welcome (the key travels on this connection only).
  auto& mrec = *registry_.find(h.host_id);
  if (udp_ && (h.capabilities & proto::kCapUdpHeartbeat)) {
    std::string key = transport::udp_hb::new_key();
    if (const fleet::UdpSlot* slot = registry_.open_udp_session(mrec, key, now)) {
      w.udp_port = udp_->port();
      w.udp_session = slot->session;
      w.udp_key = std::move(key);
    }
  } else {
    registry_.close_udp_session(mrec);
  }
  send_to_host(identity, w);
  // Heartbeats spread over the period: hosts welcomed together (a restart's reconnect storm, a
  // fleet started at once) would otherwise all be due in the same tick, every period — 10,000
  // datagrams in one ~50 ms burst of this loop, which an operator's command arriving then waits
  // behind. Each host's first heartbeat comes a fixed, host-dependent fraction of the period
  // early (never late); the later ones keep that phase.
  if (const Millis period = heartbeat_period(mrec); period > static_cast<Millis>(cfg_.heartbeat_interval_ms))
    mrec.last_sent -= static_cast<Millis>(std::hash<std::string>{}(h.host_id) %
                                          static_cast<uint64_t>(period - cfg_.heartbeat_interval_ms + 1));

  // Level-triggered: tell each rollout the host is back with what it runs (applied with the
  // other agent events of this pass, in arrival order: flush_pending), then resend every open
  // order for it (the agent de-duplicates and answers with the result it has).
  for (auto& [id, a] : active_) {
    if (!a.state.find(h.host_id)) continue;
    std::string running;
    for (const auto& s : h.services) if (s.name == a.state.service) running = s.current_version;
    pending_reports_.push_back({id, rollout::EvHostBack{h.host_id, running}, std::nullopt, {}});
  }
  for (auto& [oid, o] : orders_) {
    if (o.row.host_id == h.host_id) send_order(o);
  }
  if (was_offline) note_drift_after_end(h);
}

// A host back after the last rollout of a service ended without it (it was unknown or still in
// flight): the registry already says what it runs (from the hello); the ended rollout's log gets
// the same truth, and a warning if that differs from where the rollout left it. Nothing is
// ordered: an ended rollout orders nothing more; the operator reconciles with a new rollout or
// a rollback (see docs/GUARANTEES.md).
void Coordinator::note_drift_after_end(const proto::Hello& h) {
  for (const auto& s : h.services) {
    bool active = false;
    for (const auto& [id, a] : active_) active = active || a.state.service == s.name;
    if (active) continue;
    // Once per service per process from the store (a 10,000-host state), then from memory:
    // after a coordinator restart every host says hello "again".
    auto cached = ended_.find(s.name);
    if (cached == ended_.end()) {
      std::shared_ptr<const rollout::State> loaded;
      auto rows = store_->rollouts(s.name, false, 1);
      if (rows && !rows->empty()) {
        if (auto st = rollout::State::from_json(rows->front().state)) loaded = std::make_shared<const rollout::State>(std::move(*st));
      }
      cached = ended_.emplace(s.name, loaded).first;
    }
    if (!cached->second) continue;
    const rollout::State* st = cached->second.get();
    const uint64_t rollout_id = st->id;
    const rollout::HostSlot* slot = st->find(h.host_id);
    if (!slot) continue;
    using HS = rollout::HostState;
    if (slot->state != HS::kUnknown && slot->state != HS::kOrdered && slot->state != HS::kRollingBack) continue;
    // Where the rollout meant to leave this host: the target if it ended succeeded, else the
    // release it had before (rolled back, failed, aborted: the fleet stays on the old one).
    const std::string wanted = st->phase == rollout::Phase::kSucceeded ? st->version : slot->from_version;
    std::string msg = h.host_id + " is back after the rollout ended (" + rollout::host_state_name(slot->state) +
                      "); it runs " + (s.current_version.empty() ? "nothing" : s.current_version);
    if (s.current_version != wanted) {
      msg += ", not " + (wanted.empty() ? "nothing" : wanted) + " where the rollout left the fleet; not reconciled automatically";
      L()->warn("rollout {}: {}", rollout_id, msg);
    }
    (void)store_->add_event({0, rollout_id, clock_.wall_ms(), msg});
  }
}

void Coordinator::on_report(fleet::HostRecord& host, const proto::Report& r) {
  auto it = orders_.find(r.order_id);
  bool known = it != orders_.end() && it->second.row.host_id == host.host_id && !pending_report_ids_.count(r.order_id);
  auto svc = host.services.find(r.service);
  if (svc != host.services.end()) {
    if (!r.running_version.empty() && r.running_version != svc->second.current_version) {
      svc->second.previous_version = svc->second.current_version;
    }
    svc->second.current_version = r.running_version;
    svc->second.state = "idle";
    svc->second.order_id.clear();
    svc->second.phase.clear();
  }
  if (!known) {
    L()->info("{} reported order {} ({}), which is not open; kept as information only", host.host_id, r.order_id, r.outcome);
    return;
  }
  metrics_->reports[r.outcome]++;
  for (const auto& [k, v] : r.timings_ms) metrics_->observe_timing(k, v);
  store::ResultRow row;
  row.rollout_id = r.rollout_id;
  row.host_id = host.host_id;
  row.order_id = r.order_id;
  row.outcome = r.outcome;
  row.running_version = r.running_version;
  row.message = r.message;
  row.timings = r.timings_ms;
  row.at = clock_.wall_ms();
  uint64_t rid = it->second.row.rollout_id;
  // The report is recorded in the same transaction as the step that applies it: a crash in
  // between would otherwise close the order (never re-sent) with the rollout still waiting.
  // Reports read in one pass share that transaction (flush_pending): one fsync per pass.
  pending_report_ids_.insert(r.order_id);
  pending_reports_.push_back(
      {rid, rollout::EvReport{host.host_id, r.order_id, r.outcome, r.running_version, r.message}, std::move(row),
       fmt::format("{} reports order {}: {} (running {}){}{}", host.host_id, r.order_id, r.outcome,
                   r.running_version.empty() ? "nothing" : r.running_version, r.message.empty() ? "" : ": ", r.message)});
}

void Coordinator::on_fetch(const std::string& identity, const proto::FetchChunk& f) {
  if (deferred_fetches_.empty() && chunk_bytes_queued_->load(std::memory_order_relaxed) < kChunkQueueBudget) {
    answer_fetch(identity, f);
    return;
  }
  size_t& n = deferred_per_host_[identity];
  if (n >= kMaxDeferredPerHost) {
    L()->debug("dropping a FetchChunk from {}: {} of its requests already wait", identity, n);
    return;
  }
  ++n;
  deferred_fetches_.emplace_back(identity, f);
}

void Coordinator::serve_deferred_fetches() {
  while (!deferred_fetches_.empty() && chunk_bytes_queued_->load(std::memory_order_relaxed) < kChunkQueueBudget) {
    auto [identity, f] = std::move(deferred_fetches_.front());
    deferred_fetches_.pop_front();
    if (auto it = deferred_per_host_.find(identity); it != deferred_per_host_.end() && --it->second == 0)
      deferred_per_host_.erase(it);
    answer_fetch(identity, f);
  }
}

namespace {
// One outgoing Chunk frame; ZeroMQ's I/O thread frees it once written and gives its bytes
// back to the budget.
struct ChunkFrame {
  std::shared_ptr<std::atomic<int64_t>> queued;
  size_t size;
  std::unique_ptr<char[]> bytes;
};
}  // namespace

void Coordinator::answer_fetch(const std::string& identity, const proto::FetchChunk& f) {
  auto known = served_artifacts_.find(f.sha256);
  if (known == served_artifacts_.end()) {
    auto rel = store_->release_by_sha(f.sha256);
    if (!rel || !rel->has_value()) {
      send_to_host(identity, proto::ErrorMsg{"not_found", "no artifact with that digest", static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
      return;
    }
    if (served_artifacts_.size() >= 256) served_artifacts_.clear();
    known = served_artifacts_.emplace(f.sha256, std::make_pair((*rel)->path, (*rel)->size)).first;
  }
  const auto& [path, size] = known->second;
  if (f.offset > size) {
    send_to_host(identity, proto::ErrorMsg{"range", "offset past the end of the artifact", static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
    return;
  }
  // The bytes are read straight into the outgoing frame behind the encoded head: one copy
  // (the read) instead of four (read, msgpack buffer, string, zmq message); same wire bytes.
  size_t want = static_cast<size_t>(std::min<uint64_t>({f.length, proto::kMaxChunkBytes, size - f.offset}));
  std::string head = proto::encode_chunk_head(f.sha256, f.offset, size, want);
  const size_t total = head.size() + want;
  auto out = std::make_unique<ChunkFrame>(ChunkFrame{chunk_bytes_queued_, total, std::unique_ptr<char[]>(new char[total])});
  std::memcpy(out->bytes.get(), head.data(), head.size());
  auto got = artifacts_->read_into(path, f.offset, out->bytes.get() + head.size(), want);
  if (!got) {
    L()->error("cannot read artifact {}: {}", path, got.error().message);
    send_to_host(identity, proto::ErrorMsg{"io", got.error().message, static_cast<uint16_t>(proto::MsgType::kFetchChunk), f.sha256});
    return;
  }
  metrics_->chunk_bytes += *got;
  if (*got < want) {  // the file is shorter than its record: send what is there, as before
    send_to_host(identity, proto::Chunk{f.sha256, f.offset, size, std::string(out->bytes.get() + head.size(), *got)});
    return;
  }
  metrics_->messages_out++;
  chunk_bytes_queued_->fetch_add(static_cast<int64_t>(total), std::memory_order_relaxed);
  char* data = out->bytes.get();
  zmq::message_t frame(data, total, +[](void*, void* hint) {
    std::unique_ptr<ChunkFrame> done(static_cast<ChunkFrame*>(hint));
    done->queued->fetch_sub(static_cast<int64_t>(done->size), std::memory_order_relaxed);
  }, out.release());
  if (auto st = transport::send_msg_to(*agents_, identity, std::move(frame)); !st.ok())
    L()->debug("send chunk to {} failed: {}", identity, st.error().message);
}

void Coordinator::send_order(OpenOrder& o) {
  auto* host = registry_.find(o.row.host_id);
  // Only over a greeted connection: after a coordinator restart the hello comes first.
  if (!host || !host->online || !host->said_hello) return;
  if (!o.wire) {  // its stored body did not parse when it was loaded
    L()->error("order {} is corrupt in the store; not sent", o.row.order_id);
    return;
  }
  if (o.last_sent != 0) metrics_->orders_retried++;
  metrics_->orders_sent++;
  o.last_sent = clock_.now_ms();
  send_to_host(host->identity, *o.wire);
}

// ---- rollouts ---------------------------------------------------------------

Status Coordinator::apply(uint64_t id, const rollout::Event& ev, const store::ResultRow* result) {
  std::vector<Status> errors;
  std::vector<store::ResultRow> results;
  if (result) results.push_back(*result);
  Status s = apply_many(id, {ev}, std::move(results), &errors);
  if (!s.ok()) return s;
  return errors.empty() ? Status::Ok() : errors[0];
}

Status Coordinator::apply_many(uint64_t id, const std::vector<rollout::Event>& evs, std::vector<store::ResultRow> results,
                               std::vector<Status>* errors, bool agent_reports) {
  auto it = active_.find(id);
  if (it == active_.end()) return make_error("not_found", "rollout " + std::to_string(id) + " is not active");
  ActiveRollout& a = it->second;
  Millis wall = clock_.wall_ms();
  std::vector<Status> errs;
  // The live state is moved through the machine, not copied; if the step cannot be saved, the
  // state goes back to what the store holds (restore_saved_state).
  rollout::StepResult r = rollout::step_all(std::move(a.state), evs, wall, &errs);
  if (errors) *errors = errs;
  bool any_ok = std::any_of(errs.begin(), errs.end(), [](const Status& e) { return e.ok(); });
  if (!any_ok) {  // every event refused: the state is as it was, nothing written
    a.state = std::move(r.state);
    return errs.empty() ? Status::Ok() : errs.front();
  }

  store::StepWrite w;
  w.results = std::move(results);
  // Acknowledgements are not carried here: most orders are reported within moments of their
  // ack, and a reported order is written acked with its result. The ones still open are
  // persisted once per heartbeat interval (on_timers).
  w.rollout_id = id;
  w.phase = rollout::phase_name(r.state.phase);
  // Only the header and the slots this step touched: O(changed hosts) per step.
  w.state = r.state.header_json();
  w.slots.reserve(r.touched.size());
  for (uint32_t i : r.touched) w.slots.emplace_back(i, r.state.hosts[i].to_json_text());
  std::vector<proto::Order> new_wires;
  std::vector<std::string> broadcasts;
  std::vector<rollout::Event> follow_ups;
  std::map<std::string, Expected<std::optional<store::ReleaseRow>>> releases;
  for (const auto& act : r.actions) {
    if (auto* o = std::get_if<rollout::ActOrder>(&act)) {
      // One lookup per version per step, not one per ordered host.
      auto cached = releases.find(o->version);
      if (cached == releases.end()) {
        const auto key = std::make_pair(r.state.service, o->version);
        auto known = orderable_releases_.find(key);
        if (known != orderable_releases_.end()) {
          cached = releases.emplace(o->version, std::optional<store::ReleaseRow>(known->second)).first;
        } else {
          cached = releases.emplace(o->version, store_->release(r.state.service, o->version)).first;
          if (cached->second && cached->second->has_value()) {
            if (orderable_releases_.size() >= 256) orderable_releases_.clear();
            orderable_releases_.emplace(key, **cached->second);
          }
        }
      }
      const auto& rel = cached->second;
      if (!rel || !rel->has_value()) {
        std::string why = "release " + o->version + " of " + r.state.service + " is not known to the coordinator";
        w.events.push_back({0, id, wall, o->host_id + ": cannot order " + o->kind + ": " + why});
        follow_ups.push_back(rollout::EvReport{o->host_id, o->order_id, "failed", "", why});
        continue;
      }
      proto::Order po;
      po.order_id = o->order_id;
      po.rollout_id = id;
      po.service = r.state.service;
      po.kind = o->kind;
      po.version = o->version;
      po.sha256 = (*rel)->sha256;
      po.size = (*rel)->size;
      po.manifest = (*rel)->manifest;  // agents check these; the coordinator only carries them
      po.signature = (*rel)->signature;
      // The wire caps both at 24 h (see PROTOCOL.md); the plan validator enforces the same.
      constexpr Millis kMaxWire = 24LL * 3600 * 1000;
      po.min_healthy_ms = static_cast<uint32_t>(std::clamp<Millis>(r.state.plan.min_healthy_ms, 0, kMaxWire));
      po.healthy_deadline_ms = static_cast<uint32_t>(std::clamp<Millis>(r.state.plan.healthy_deadline_ms, 0, kMaxWire));
      store::OrderRow row;
      row.order_id = o->order_id;
      row.rollout_id = id;
      row.host_id = o->host_id;
      row.body = order_body(po);
      row.created_at = wall;
      w.new_orders.push_back(std::move(row));
      new_wires.push_back(std::move(po));
    } else if (auto* b = std::get_if<rollout::ActBroadcast>(&act)) {
      broadcasts.push_back(b->kind);
    } else if (auto* rec = std::get_if<rollout::ActRecord>(&act)) {
      w.events.push_back({0, id, wall, rec->message});
    } else if (auto* f = std::get_if<rollout::ActFinished>(&act)) {
      w.finished_at = wall;
      w.assign_revision = f->phase == rollout::Phase::kSucceeded;
    }
  }
  // The operator command that caused this step (handle_op): its audit row and the events it
  // asked for are committed with the decision, not in a durable commit of their own after it.
  const bool carries_op = op_record_ && !op_record_->written;
  if (carries_op) {
    w.events.insert(w.events.begin(), op_record_->events.begin(), op_record_->events.end());
    w.audit.push_back(op_record_->audit);
  }
  // Persist first; only what is on disk is acted on. Reports that lead to no act need no fsync
  // of their own (see StepWrite::durable): one fsync per batch transition, not one per pass.
  w.durable = !agent_reports || !w.new_orders.empty() || !broadcasts.empty() || w.finished_at > 0 ||
              !follow_ups.empty() || carries_op;
  if (auto s = store_->save_step(w); !s.ok()) {
    L()->critical("rollout {}: cannot persist step, not acting on it: {}", id, s.error().message);
    restore_saved_state(a);
    return s;
  }
  if (carries_op) op_record_->written = true;
  for (const auto& e : w.events) LR()->info("rollout {}: {}", id, e.message);
  a.state = std::move(r.state);
  a.deadline = r.deadline;  // next_deadline(a.state), from the hosts with a deadline only
  a.row.phase = w.phase;
  dirty_ = true;
  for (size_t i = 0; i < w.new_orders.size(); ++i) {
    auto& o = orders_[w.new_orders[i].order_id];
    o.row = std::move(w.new_orders[i]);
    o.wire = std::move(new_wires[i]);
    o.last_sent = 0;
    send_order(o);
  }
  for (const auto& kind : broadcasts) {
    auto s = transport::send(*pub_, proto::Signal{kind, id, a.state.service});
    metrics_->broadcasts++;
    if (!s.ok()) L()->warn("broadcast {} failed: {} (hosts still get their own orders)", kind, s.error().message);
  }
  if (rollout::is_terminal(a.state.phase)) {
    // An ended rollout orders nothing more: a host that comes back later must not receive
    // a stale update (level-triggered reconciliation is by the next rollout, not by resends).
    // Its open order rows were closed by the step that ended it (StepWrite::finished_at).
    for (auto oi = orders_.begin(); oi != orders_.end();) {
      if (oi->second.row.rollout_id == id) oi = orders_.erase(oi);
      else ++oi;
    }
    metrics_->rollouts_ended[w.phase]++;
    LR()->info("rollout {} of {} to {} ended: {}{}{}", id, a.state.service, a.state.version, w.phase,
               a.state.end_reason.empty() ? "" : " — ", a.state.end_reason);
    ended_[a.state.service] = std::make_shared<const rollout::State>(std::move(a.state));
    active_.erase(it);
  }
  for (const auto& ev2 : follow_ups) {
    if (active_.count(id)) (void)apply(id, ev2);
  }
  return Status::Ok();
}

void Coordinator::restore_saved_state(ActiveRollout& a) {
  const uint64_t id = a.row.id;
  auto row = store_->rollout(id);
  if (row && row->has_value() && (*row)->state.is_object() && (*row)->state.empty()) {
    rollout::State never_started;  // its first step (the start) is what failed
    never_started.id = id;
    never_started.service = a.row.service;
    never_started.version = a.row.version;
    a.state = std::move(never_started);
    a.deadline = 0;
    return;
  }
  if (row && row->has_value()) {
    if (auto st = rollout::State::from_json((*row)->state)) {
      a.state = std::move(*st);
      a.deadline = rollout::next_deadline(a.state);
      return;
    }
  }
  // Neither the step nor the last saved state: nothing consistent is left in memory. Crash-only:
  // exit, and systemd starts a coordinator that resumes from the store (docs/GUARANTEES.md, 3).
  L()->critical("rollout {}: cannot read its saved state back either ({}); exiting so that a restart resumes from the store",
                id, row ? "unparsable" : row.error().message);
  L()->flush();
  std::_Exit(70);
}

std::vector<rollout::HostCandidate> Coordinator::select_hosts(const std::string& service, const std::string& selector) {
  auto sel = rollout::parse_selector(selector);
  if (!sel) throw OpError("bad selector: " + sel.error().message);
  std::vector<rollout::HostCandidate> out;
  for (const auto& [id, h] : registry_.hosts()) {
    auto svc = h.services.find(service);
    if (svc == h.services.end()) continue;
    if (!rollout::selector_matches(*sel, h.labels)) continue;
    out.push_back({id, h.labels, svc->second.current_version, h.online});
  }
  return out;
}

uint64_t Coordinator::start_rollout(const std::string& service, const std::string& version, const std::string& kind,
                                    const nlohmann::json& plan_json, const std::string& selector,
                                    const std::string& who, const std::string& reason) {
  for (const auto& [id, a] : active_) {
    if (a.state.service == service) {
      throw OpError("rollout " + std::to_string(id) + " of " + service + " is still " + a.row.phase +
                    "; abort it or wait for it to end before starting another");
    }
  }
  // The request's own mistakes first (a bad plan is bad whatever the fleet holds), then the state.
  auto plan = rollout::Plan::from_json(plan_json.is_null() ? nlohmann::json::object() : plan_json);
  if (!plan) throw OpError("bad plan: " + plan.error().message);
  auto rel = store_->release(service, version);
  if (!rel) throw OpError(rel.error().message);
  if (!rel->has_value()) throw OpError("release " + version + " of " + service + " has not been uploaded");
  auto hosts = select_hosts(service, selector);
  if (hosts.empty()) throw OpError("no host runs service " + service + (selector.empty() ? "" : " and matches " + selector));
  auto sched = rollout::make_schedule(*plan, hosts);
  if (!sched) throw OpError("cannot plan: " + sched.error().message);

  store::RolloutRow row;
  row.service = service;
  row.version = version;
  row.kind = kind;
  row.phase = "running";
  row.created_by = who;
  row.reason = reason;
  row.created_at = clock_.wall_ms();
  row.state = nlohmann::json::object();
  auto id = store_->create_rollout(row);
  if (!id) throw OpError(id.error().message);
  row.id = *id;
  rollout::State empty;
  empty.id = *id;
  empty.service = service;
  empty.version = version;
  active_[*id] = ActiveRollout{row, empty};
  ended_.erase(service);
  // The start event is moved in, not copied (10,000 candidates with their labels).
  std::vector<rollout::Event> start_ev;
  start_ev.emplace_back(rollout::EvStart{*id, service, version, *plan, std::move(hosts)});
  std::vector<Status> start_errors;
  auto s = apply_many(*id, start_ev, {}, &start_errors);
  if (s.ok() && !start_errors.empty()) s = start_errors.front();
  if (!s.ok()) {
    active_.erase(*id);
    store::StepWrite w;
    w.rollout_id = *id;
    w.phase = "failed";
    w.state = nlohmann::json::object();
    w.finished_at = clock_.wall_ms();
    w.events.push_back({0, *id, w.finished_at, "could not start: " + s.error().message});
    (void)store_->save_step(w);
    throw OpError("could not start: " + s.error().message);
  }
  return *id;
}

nlohmann::json Coordinator::rollout_view(const store::RolloutRow& row, const rollout::State& st, bool with_events,
                                         int64_t events_after, bool with_hosts) {
  auto c = rollout::count(st);
  nlohmann::json hosts = nlohmann::json::array();
  for (const auto& h : st.hosts) {
    if (!with_hosts) break;
    hosts.push_back({{"host_id", h.host_id}, {"state", rollout::host_state_name(h.state)}, {"batch", h.batch},
                     {"domain", h.domain}, {"from_version", h.from_version}, {"order_id", h.order_id},
                     {"message", h.message}});
  }
  nlohmann::json batches = nlohmann::json::array();
  for (const auto& b : st.batches) {
    if (!with_hosts) break;
    batches.push_back(b);
  }
  nlohmann::json j = {{"id", row.id},
                      {"service", row.service},
                      {"version", row.version},
                      {"kind", row.kind},
                      {"phase", st.hosts.empty() && !row.phase.empty() ? row.phase : rollout::phase_name(st.phase)},
                      {"waiting_promote", st.waiting_promote},
                      {"created_by", row.created_by},
                      {"reason", row.reason},
                      {"created_at", row.created_at},
                      {"finished_at", row.finished_at},
                      {"revision", row.revision},
                      {"batch", st.current_batch + 1},
                      {"batches_total", st.batches.size()},
                      {"batches", batches},
                      {"end_reason", st.end_reason},
                      {"plan", st.plan.to_json()},
                      {"counts",
                       {{"total", st.hosts.size()}, {"pending", c.pending}, {"ordered", c.ordered}, {"healthy", c.healthy},
                        {"failed", c.failed}, {"unknown", c.unknown}, {"rolling_back", c.rolling_back},
                        {"rolled_back", c.rolled_back}, {"rollback_failed", c.rollback_failed}, {"skipped", c.skipped}}},
                      {"hosts", hosts}};
  if (!with_hosts) {
    j.erase("hosts");
    j.erase("batches");
  }
  if (with_events) {
    nlohmann::json evs = nlohmann::json::array();
    auto e = store_->events(row.id, events_after, 10000);
    if (e) {
      for (const auto& ev : *e) evs.push_back({{"id", ev.id}, {"at", ev.at}, {"message", ev.message}});
    }
    j["events"] = evs;
  }
  return j;
}

// ---- operators --------------------------------------------------------------

void Coordinator::drain_operators() {
  for (int i = 0; i < 1000; ++i) {
    bool dropped = false;
    auto in = transport::recv_routed(*operators_, &dropped);
    if (dropped) {
      metrics_->decode_errors++;
      continue;
    }
    if (!in) return;
    metrics_->messages_in++;
    auto msg = proto::decode(in->payload);
    proto::OpReply reply;
    if (!msg) {
      metrics_->decode_errors++;
      LO()->warn("bad operator message: {}", msg.error().message);
      reply.error = "bad request: " + msg.error().message;
    } else if (auto* req = std::get_if<proto::OpRequest>(&*msg)) {
      if (!secure()) {
        std::string who = "insecure-dev";
        if (req->args.contains("user") && req->args["user"].is_string()) {
          std::string u = req->args["user"].get<std::string>();
          if (is_safe_name(u)) who += " (" + u + ")";
        }
        reply = handle_op(*req, who, Role::kAdmin);
      } else if (const auto* op = keys_->op(in->user_id)) {
        // The key's name is who acted; a claimed $USER is not evidence of anything.
        reply = handle_op(*req, op->name, parse_role(op->role).value_or(Role::kViewer));
      } else {
        // Revoked since its handshake: refused at this message, and on the record.
        metrics_->auth_refused++;
        std::string who = "key " + in->user_id.substr(0, 12) + "…";
        reply.request_id = req->request_id;
        reply.error = "this operator key is not (or no longer) authorized";
        (void)store_->audit({0, clock_.wall_ms(), who, req->command.substr(0, 64), "", "refused: key not authorized"});
        warn_refused(in->user_id, "operator key " + in->user_id + " is not authorized; " + req->command.substr(0, 64) + " refused");
      }
    } else {
      reply.error = std::string("operators may only send op_request, not ") + proto::type_name(proto::type_of(*msg));
    }
    (void)transport::send_to(*operators_, in->identity, reply);
  }
}

proto::OpReply Coordinator::handle_op(const proto::OpRequest& req, const std::string& who, Role role) {
  static const std::map<std::string, OpHandler> kHandlers = {
      {"hosts", &Coordinator::op_hosts},
      {"status", &Coordinator::op_status},
      {"release.get", &Coordinator::op_release_get},
      {"release.upload", &Coordinator::op_release_upload},
      {"rollout.plan", &Coordinator::op_rollout_plan},
      {"rollout.start", &Coordinator::op_rollout_start},
      {"rollout.get", &Coordinator::op_rollout_get},
      {"rollout.pause", &Coordinator::op_rollout_control},
      {"rollout.resume", &Coordinator::op_rollout_control},
      {"rollout.promote", &Coordinator::op_rollout_control},
      {"rollout.abort", &Coordinator::op_rollout_control},
      {"rollback", &Coordinator::op_rollback},
      {"history", &Coordinator::op_history},
      {"audit", &Coordinator::op_audit},
      {"keys.list", &Coordinator::op_keys_list},
      {"keys.accept", &Coordinator::op_keys_change},
      {"keys.accept_many", &Coordinator::op_keys_accept_many},
      {"keys.reject", &Coordinator::op_keys_change},
      {"keys.revoke", &Coordinator::op_keys_change},
      {"keys.add_operator", &Coordinator::op_keys_add_operator},
  };
  static const std::set<std::string> kReadOnly = {"hosts", "status", "release.get", "rollout.plan", "rollout.get", "history", "audit"};
  // The least role each command needs: viewers read, deployers change rollouts and releases,
  // admins manage keys.
  static const std::map<std::string, Role> kNeeds = {
      {"release.upload", Role::kDeployer}, {"rollout.start", Role::kDeployer},  {"rollout.pause", Role::kDeployer},
      {"rollout.resume", Role::kDeployer}, {"rollout.promote", Role::kDeployer}, {"rollout.abort", Role::kDeployer},
      {"rollback", Role::kDeployer},       {"keys.list", Role::kAdmin},          {"keys.accept", Role::kAdmin},
      {"keys.accept_many", Role::kAdmin},  {"keys.reject", Role::kAdmin},       {"keys.revoke", Role::kAdmin},        {"keys.add_operator", Role::kAdmin},
  };
  proto::OpReply rep;
  rep.request_id = req.request_id;
  std::string target;
  if (req.args.contains("service") && req.args["service"].is_string()) target = req.args["service"].get<std::string>().substr(0, 128);
  if (target.empty() && req.args.contains("id") && req.args["id"].is_number()) target = "rollout " + req.args["id"].dump();
  if (target.empty() && req.args.contains("target") && req.args["target"].is_string()) target = req.args["target"].get<std::string>().substr(0, 128);
  if (target.empty() && req.args.contains("name") && req.args["name"].is_string()) target = req.args["name"].get<std::string>().substr(0, 128);
  if (target.empty() && req.args.contains("keys") && req.args["keys"].is_array()) target = std::to_string(req.args["keys"].size()) + " agent key(s)";
  auto h = kHandlers.find(req.command);
  if (h == kHandlers.end()) {
    rep.error = "unknown command: " + req.command.substr(0, 64);
    (void)store_->audit({0, clock_.wall_ms(), who, req.command.substr(0, 64), target, "refused: unknown command"});
    return rep;
  }
  auto need = kNeeds.find(req.command);
  Role needed = need == kNeeds.end() ? Role::kViewer : need->second;
  if (role < needed) {
    metrics_->auth_refused++;
    rep.error = std::string("permission denied: ") + req.command + " needs the " + role_name(needed) + " role; " + who +
                " is a " + role_name(role);
    (void)store_->audit({0, clock_.wall_ms(), who, req.command, target,
                         std::string("refused: role ") + role_name(role) + " < " + role_name(needed)});
    LO()->warn("{} ({}) may not run {} {}: refused", who, role_name(role), req.command, target);
    return rep;
  }
  bool mutating = !kReadOnly.count(req.command);
  // release.upload writes its own audit row (with the release's digest).
  const bool audited_here = mutating && req.command != "release.upload";
  // Its audit row says "ok" if the command's first rollout step commits (apply_many carries it);
  // otherwise it is written below with the outcome.
  if (audited_here) op_record_ = OpRecord{{0, clock_.wall_ms(), who, req.command, target, "ok"}, {}, false};
  try {
    nlohmann::json args = req.args;
    args["__command"] = req.command;
    rep.result = (this->*(h->second))(args, who);
    rep.ok = true;
  } catch (const OpError& e) {
    rep.error = e.what();
  } catch (const nlohmann::json::exception& e) {
    rep.error = std::string("bad arguments: ") + e.what();
  } catch (const std::exception& e) {
    // Nothing an operator sends may stop the coordinator.
    LO()->error("{} failed: {}", req.command, e.what());
    rep.error = std::string("internal error: ") + e.what();
  }
  if (audited_here) {
    OpRecord rec = std::move(*op_record_);
    op_record_.reset();
    if (!rec.written) {  // no step carried it (refused, or a command that steps no rollout)
      for (const auto& e : rec.events) (void)store_->add_event(e);
      rec.audit.decision = rep.ok ? "ok" : "refused: " + rep.error;
      (void)store_->audit(rec.audit);
    } else if (!rep.ok) {  // its step was saved and acted on; the reply failed after that
      rec.audit.at = clock_.wall_ms();
      rec.audit.decision = "error after it took effect: " + rep.error;
      (void)store_->audit(rec.audit);
    }
    LO()->info("{} ran {} {}: {}", who, req.command, target, rep.ok ? "ok" : rep.error);
  }
  dirty_ = true;
  return rep;
}

nlohmann::json Coordinator::op_hosts(const nlohmann::json&, const std::string&) {
  return {{"hosts", registry_.to_json(clock_.wall_ms())}};
}

nlohmann::json Coordinator::op_status(const nlohmann::json& args, const std::string&) {
  std::string service = arg_name(args, "service", false);
  nlohmann::json rollouts = nlohmann::json::array();
  std::set<std::string> seen;
  auto rows = store_->latest_rollouts(service, 200, /*with_hosts=*/false);
  if (!rows) throw OpError(rows.error().message);
  for (const auto& row : *rows) {
    if (seen.count(row.service)) continue;
    seen.insert(row.service);
    auto it = active_.find(row.id);
    if (it != active_.end()) {
      rollouts.push_back(rollout_view(it->second.row, it->second.state, false));
    } else if (auto e = ended_.find(row.service); e != ended_.end() && e->second && e->second->id == row.id) {
      rollouts.push_back(rollout_view(row, *e->second, false));  // ended in this process: in memory
    } else {
      auto full = store_->rollout(row.id);  // with its host slots
      auto st = full && full->has_value() ? rollout::State::from_json((*full)->state) : rollout::State::from_json(row.state);
      rollouts.push_back(rollout_view(row, st ? *st : rollout::State{}, false));
    }
    // The last few events, for the status page and `gantry status --json` (the full log: rollout.get).
    nlohmann::json evs = nlohmann::json::array();
    if (auto e = store_->recent_events(row.id, 10)) {
      for (const auto& ev : *e) evs.push_back({{"id", ev.id}, {"at", ev.at}, {"message", ev.message}});
    }
    rollouts.back()["recent_events"] = std::move(evs);
  }
  return {{"rollouts", rollouts}, {"hosts", registry_.to_json(clock_.wall_ms())}, {"epoch", epoch_}};
}

nlohmann::json Coordinator::op_release_get(const nlohmann::json& args, const std::string&) {
  auto rel = store_->release(arg_name(args, "service"), arg_name(args, "version"));
  if (!rel) throw OpError(rel.error().message);
  if (!rel->has_value()) return {{"exists", false}};
  return {{"exists", true}, {"sha256", (*rel)->sha256}, {"size", (*rel)->size}, {"created_at", (*rel)->created_at},
          {"signed", !(*rel)->signature.empty()}, {"manifest", (*rel)->manifest}, {"signature", (*rel)->signature}};
}

nlohmann::json Coordinator::op_release_upload(const nlohmann::json& args, const std::string& who) {
  std::string service = arg_name(args, "service"), version = arg_name(args, "version");
  std::string sha = arg_str(args, "sha256");
  if (!is_sha256_hex(sha)) throw OpError("sha256 must be 64 lowercase hex digits");
  uint64_t size = arg_u64(args, "size"), offset = arg_u64(args, "offset");
  if (size > (1ULL << 34)) throw OpError("release larger than 16 GiB");
  if (size == 0) throw OpError("release is empty: a release is one non-empty archive");
  std::string data;
  if (args.contains("data")) {
    if (!args["data"].is_binary()) throw OpError("data must be binary");
    const auto& bin = args["data"].get_binary();
    data.assign(bin.begin(), bin.end());
  }
  // The signed manifest travels with the release to every agent, which checks it against its
  // own release keys: the coordinator holds no release key and vouches for nothing.
  std::string manifest = arg_str(args, "manifest", false), signature = arg_str(args, "signature", false);
  if (manifest.size() > release::kMaxManifestBytes) throw OpError("manifest larger than 4096 bytes");
  if (!signature.empty() && (signature.size() != release::kSignatureHexChars ||
                             signature.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos))
    throw OpError("signature must be 128 hex digits");
  if (manifest.empty() != signature.empty()) throw OpError("manifest and signature go together");
  auto existing = store_->release(service, version);
  if (!existing) throw OpError(existing.error().message);
  if (existing->has_value()) {
    if ((*existing)->sha256 != sha) throw OpError("release " + version + " of " + service + " already exists with another digest (" + (*existing)->sha256 + "); versions are immutable");
    return {{"received", size}, {"complete", true}};
  }
  auto p = artifacts_->upload(sha, size, offset, data);
  if (!p) throw OpError(p.error().message);
  if (p->complete) {
    store::ReleaseRow r{service, version, sha, size, p->path, clock_.wall_ms(), manifest, signature};
    if (manifest.empty()) {
      LO()->warn("release {} of {} was uploaded without a signed manifest; agents with release keys will refuse it", version, service);
    } else if (auto m = release::parse_manifest(manifest); !m) {
      LO()->warn("release {} of {}: {}; agents will refuse it", version, service, m.error().message);
    } else if (auto c = release::check_matches(*m, service, version, sha, size); !c.ok()) {
      LO()->warn("release {} of {}: {}; agents will refuse it", version, service, c.error().message);
    }
    if (auto s = store_->put_release(r); !s.ok()) throw OpError(s.error().message);
    (void)store_->audit({0, clock_.wall_ms(), who, "release.upload", service + " " + version,
                         "ok: sha256 " + sha + (manifest.empty() ? " (unsigned)" : " (signed manifest)")});
    LO()->info("{} uploaded release {} of {} ({} bytes, sha256 {})", who, version, service, size, sha);
  }
  return {{"received", p->received}, {"complete", p->complete}};
}

nlohmann::json Coordinator::op_rollout_plan(const nlohmann::json& args, const std::string&) {
  std::string service = arg_name(args, "service");
  auto plan = rollout::Plan::from_json(args.contains("plan") ? args["plan"] : nlohmann::json::object());
  if (!plan) throw OpError("bad plan: " + plan.error().message);
  auto hosts = select_hosts(service, arg_str(args, "selector", false));
  if (hosts.empty()) throw OpError("no host runs service " + service + " and matches the selector");
  auto sched = rollout::make_schedule(*plan, hosts);
  if (!sched) throw OpError("cannot plan: " + sched.error().message);
  nlohmann::json j = {{"service", service}, {"hosts", hosts.size()}, {"batches", sched->batches},
                      {"failure_budget_hosts", sched->failure_budget_hosts}, {"plan", plan->to_json()}};
  if (sched->per_batch_budget_hosts) j["per_batch_budget_hosts"] = *sched->per_batch_budget_hosts;
  return j;
}

nlohmann::json Coordinator::op_rollout_start(const nlohmann::json& args, const std::string& who) {
  uint64_t id = start_rollout(arg_name(args, "service"), arg_name(args, "version"), "rollout",
                              args.contains("plan") ? args["plan"] : nlohmann::json::object(),
                              arg_str(args, "selector", false), who, arg_str(args, "reason", false));
  auto it = active_.find(id);
  // A summary: the loop is ordering the first batch, and the per-host lists are `rollout.get`'s.
  if (it != active_.end()) return rollout_view(it->second.row, it->second.state, false, 0, /*with_hosts=*/false);
  nlohmann::json a = {{"id", id}};
  nlohmann::json view = op_rollout_get(a, who);
  view.erase("hosts");
  view.erase("batches");
  return view;
}

Coordinator::ActiveRollout* Coordinator::find_rollout_arg(const nlohmann::json& args) {
  if (args.contains("id") && !args["id"].is_null()) {
    auto it = active_.find(arg_u64(args, "id"));
    if (it == active_.end()) throw OpError("rollout " + args["id"].dump() + " is not active");
    return &it->second;
  }
  std::string service = arg_name(args, "service", false);
  for (auto& [id, a] : active_) {
    if (service.empty() || a.state.service == service) return &a;
  }
  throw OpError(service.empty() ? "no active rollout" : "no active rollout of " + service);
}

nlohmann::json Coordinator::op_rollout_get(const nlohmann::json& args, const std::string&) {
  uint64_t id = arg_u64(args, "id");
  // events_after: only events with a larger id (a watcher asks for what it has not seen yet).
  int64_t after = args.contains("events_after") && args["events_after"].is_number_integer() ? args["events_after"].get<int64_t>() : 0;
  bool events = args.value("events", false);
  auto it = active_.find(id);
  if (it != active_.end()) return rollout_view(it->second.row, it->second.state, events, after);
  auto row = store_->rollout(id);
  if (!row) throw OpError(row.error().message);
  if (!row->has_value()) throw OpError("no rollout " + std::to_string(id));
  auto st = rollout::State::from_json((*row)->state);
  return rollout_view(**row, st ? *st : rollout::State{}, events, after);
}

nlohmann::json Coordinator::op_rollout_control(const nlohmann::json& args, const std::string& who) {
  std::string cmd = args.value("__command", std::string());
  ActiveRollout* a = find_rollout_arg(args);
  uint64_t id = a->row.id;
  rollout::Event ev;
  if (cmd == "rollout.pause") ev = rollout::EvPause{};
  else if (cmd == "rollout.resume") ev = rollout::EvResume{};
  else if (cmd == "rollout.promote") ev = rollout::EvPromote{};
  else ev = rollout::EvAbort{};
  store::EventRow asked{0, id, clock_.wall_ms(), who + " asked to " + cmd.substr(8)};
  if (op_record_) op_record_->events.push_back(std::move(asked));  // committed with the step (apply_many)
  else (void)store_->add_event(asked);
  auto s = apply(id, ev);
  if (!s.ok()) throw OpError(s.error().message);
  return rollout_summary(id, who);
}

// The reply of the commands that change a rollout: its view without the per-host lists (at
// 10,000 hosts those are ~1 MB of JSON, built on the loop while a rollback's Signal fans out;
// `rollout.get` has them).
nlohmann::json Coordinator::rollout_summary(uint64_t id, const std::string& who) {
  auto it = active_.find(id);
  if (it != active_.end()) return rollout_view(it->second.row, it->second.state, false, 0, /*with_hosts=*/false);
  nlohmann::json g = {{"id", id}};
  nlohmann::json view = op_rollout_get(g, who);  // ended already: from the store (rare)
  view.erase("hosts");
  view.erase("batches");
  return view;
}

nlohmann::json Coordinator::op_rollback(const nlohmann::json& args, const std::string& who) {
  std::string service = arg_name(args, "service");
  // An active rollout of the service: roll back its changed hosts now.
  for (auto& [id, a] : active_) {
    if (a.state.service != service) continue;
    uint64_t rid = id;
    auto s = apply(rid, rollout::EvRollback{});
    if (!s.ok()) throw OpError(s.error().message);
    return rollout_summary(rid, who);
  }
  // Otherwise: a new rollout to an earlier revision (default: the one before the newest).
  auto rows = store_->rollouts(service, false, 10000, /*with_hosts=*/false);
  if (!rows) throw OpError(rows.error().message);
  std::vector<store::RolloutRow> revs;
  for (const auto& r : *rows) if (r.revision > 0) revs.push_back(r);  // newest first
  std::string target;
  int64_t to_rev = args.contains("to_revision") ? static_cast<int64_t>(arg_u64(args, "to_revision")) : 0;
  if (to_rev > 0) {
    for (const auto& r : revs) if (r.revision == to_rev) target = r.version;
    if (target.empty()) throw OpError("service " + service + " has no revision " + std::to_string(to_rev));
  } else {
    if (revs.size() < 2) throw OpError("service " + service + " has no earlier revision to roll back to");
    std::string current = revs[0].version;
    for (const auto& r : revs) {
      if (r.version != current) {
        target = r.version;
        break;
      }
    }
    if (target.empty()) throw OpError("service " + service + " has no earlier revision with another version");
  }
  nlohmann::json plan = args.contains("plan") ? args["plan"] : nlohmann::json::object();
  std::string reason = arg_str(args, "reason", false);
  if (reason.empty()) reason = "rollback to " + target;
  uint64_t id = start_rollout(service, target, "rollback", plan, arg_str(args, "selector", false), who, reason);
  return rollout_summary(id, who);
}

nlohmann::json Coordinator::op_history(const nlohmann::json& args, const std::string&) {
  std::string service = arg_name(args, "service", false);
  auto rows = store_->rollouts(service, false, 1000, /*with_hosts=*/false);
  if (!rows) throw OpError(rows.error().message);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : *rows) {
    std::string end_reason = r.state.is_object() ? r.state.value("end_reason", std::string()) : std::string();
    out.push_back({{"id", r.id}, {"service", r.service}, {"version", r.version}, {"kind", r.kind},
                   {"phase", r.phase}, {"revision", r.revision}, {"created_by", r.created_by},
                   {"reason", r.reason}, {"created_at", r.created_at}, {"finished_at", r.finished_at},
                   {"end_reason", end_reason}, {"plan", r.state.is_object() && r.state.contains("plan") ? r.state["plan"] : nlohmann::json()}});
  }
  return {{"rollouts", out}};
}

nlohmann::json Coordinator::op_audit(const nlohmann::json& args, const std::string&) {
  int limit = args.contains("limit") ? static_cast<int>(std::min<uint64_t>(arg_u64(args, "limit"), 10000)) : 100;
  auto rows = store_->audit_log(limit);
  if (!rows) throw OpError(rows.error().message);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& a : *rows) {
    out.push_back({{"id", a.id}, {"at", a.at}, {"who", a.who}, {"command", a.command}, {"target", a.target}, {"decision", a.decision}});
  }
  return {{"audit", out}};
}

nlohmann::json Coordinator::op_keys_list(const nlohmann::json&, const std::string&) {
  nlohmann::json j = keys_->to_json();
  j["secure"] = secure();
  return j;
}

nlohmann::json Coordinator::op_keys_change(const nlohmann::json& args, const std::string& who) {
  std::string cmd = args.value("__command", std::string());
  std::string target = arg_str(args, "target");
  if (target.empty() || target.size() > 128) throw OpError("target must be a host id or a key");
  Expected<KeyChange> ch = make_error("usage", "unknown keys command");
  if (cmd == "keys.accept") ch = keys_->accept(target, arg_name(args, "host", false), who);
  else if (cmd == "keys.reject") ch = keys_->reject(target, who);
  else if (cmd == "keys.revoke") ch = keys_->revoke(target, who);
  if (!ch) throw OpError(ch.error().message);
  for (const auto& row : ch->agents) {
    if (row.state != "accepted" && !row.host_id.empty()) disconnect_host(row.host_id, "its key was " + row.state);
  }
  nlohmann::json agents = nlohmann::json::array();
  for (const auto& r : ch->agents) agents.push_back({{"key", r.key}, {"host_id", r.host_id}, {"state", r.state}});
  nlohmann::json out = {{"summary", ch->summary}, {"agents", agents}};
  if (ch->op) out["operator"] = {{"key", ch->op->key}, {"name", ch->op->name}, {"role", ch->op->role}, {"state", ch->op->state}};
  return out;
}

nlohmann::json Coordinator::op_keys_accept_many(const nlohmann::json& args, const std::string& who) {
  if (!args.contains("keys") || !args["keys"].is_array()) throw OpError("keys must be an array of {\"host\", \"key\"}");
  const auto& in = args["keys"];
  // The operator socket's 4 MiB frame limit bounds this anyway (about 50,000 entries).
  if (in.size() > 100000) throw OpError("at most 100000 keys per request");
  std::vector<std::pair<std::string, std::string>> host_keys;
  host_keys.reserve(in.size());
  for (const auto& e : in) {
    if (!e.is_object() || !e.contains("host") || !e["host"].is_string() || !e.contains("key") || !e["key"].is_string())
      throw OpError("keys must be an array of {\"host\", \"key\"}");
    host_keys.emplace_back(e["host"].get<std::string>(), e["key"].get<std::string>());
  }
  auto ch = keys_->accept_many(host_keys, who);
  if (!ch) throw OpError(ch.error().message);
  size_t accepted = 0, revoked = 0;
  for (const auto& row : ch->agents) {
    if (row.state == "accepted") accepted++;
    else revoked++;
    if (row.state != "accepted" && !row.host_id.empty()) disconnect_host(row.host_id, "its key was " + row.state);
  }
  return {{"summary", ch->summary}, {"accepted", accepted}, {"revoked", revoked}};
}

nlohmann::json Coordinator::op_keys_add_operator(const nlohmann::json& args, const std::string& who) {
  auto role = parse_role(arg_str(args, "role"));
  if (!role) throw OpError("role must be viewer, deployer or admin");
  auto ch = keys_->add_operator(arg_name(args, "name"), arg_str(args, "key"), *role, who);
  if (!ch) throw OpError(ch.error().message);
  return {{"summary", ch->summary}, {"operator", {{"key", ch->op->key}, {"name", ch->op->name}, {"role", ch->op->role}}}};
}

// ---- authentication ---------------------------------------------------------

void Coordinator::drain_zap() {
  // ZAP (RFC 27) over inproc: 7 request frames for CURVE, 6 reply frames. Bounded per turn.
  for (int i = 0; i < 1000; ++i) {
    std::vector<zmq::message_t> req;
    zmq::message_t part;
    if (!zap_->recv(part, zmq::recv_flags::dontwait)) return;
    req.push_back(std::move(part));
    while (req.back().more() && req.size() < 16) {
      zmq::message_t m;
      if (!zap_->recv(m, zmq::recv_flags::none)) break;
      req.push_back(std::move(m));
    }
    while (req.back().more()) {  // never from libzmq; drain defensively
      zmq::message_t m;
      if (!zap_->recv(m, zmq::recv_flags::none)) break;
      req.back() = std::move(m);
    }
    std::string request_id = req.size() > 1 ? req[1].to_string() : "";
    ZapDecision d;
    if (req.size() < 6 || req[0].to_string() != "1.0") {
      d.reason = "malformed ZAP request";
    } else if (req[5].to_string() != "CURVE" || req.size() != 7 || req[6].size() != 32) {
      d.reason = "only CURVE clients are allowed";
    } else {
      char z85[41] = {};
      zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
      d = keys_->zap(req[2].to_string(), z85);
      if (!d.allow) {
        metrics_->zap_denied++;
        warn_refused(z85, "handshake from " + req[3].to_string() + " refused on " + req[2].to_string() + ": " + d.reason);
      }
    }
    const std::string code = d.allow ? "200" : "400";
    try {
      zap_->send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(code), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(d.reason.substr(0, 200)), zmq::send_flags::sndmore);
      zap_->send(zmq::buffer(d.allow ? d.user_id : std::string()), zmq::send_flags::sndmore);
      zap_->send(zmq::str_buffer(""), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      L()->error("ZAP reply failed: {}", e.what());
    }
  }
}

void Coordinator::drain_monitor(zmq::socket_t& mon, const char* socket_name) {
  for (int i = 0; i < 1000; ++i) {
    zmq::message_t ev;
    if (!mon.recv(ev, zmq::recv_flags::dontwait)) return;
    std::string endpoint;
    if (ev.more()) {
      zmq::message_t addr;
      if (mon.recv(addr, zmq::recv_flags::none)) endpoint = addr.to_string();
    }
    if (ev.size() < 6) continue;
    uint16_t event = 0;
    int32_t value = 0;
    std::memcpy(&event, ev.data(), 2);
    std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    metrics_->auth_refused++;
    std::string why = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "refused by ZAP (key not allowed)"
                      : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                          ? "protocol error (plaintext, wrong mechanism or garbage) code " + std::to_string(value)
                          : "handshake failed (" + std::string(zmq_strerror(value)) + ")";
    // One line per socket and reason a minute, with how many since: a flood cannot flood the log.
    std::string key = std::string(socket_name) + ":" + std::to_string(event);
    ++handshake_failures_[key];
    Millis now = clock_.now_ms();
    auto it = refused_logged_.find(key);
    if (it != refused_logged_.end() && now - it->second < 60000) continue;
    refused_logged_[key] = now;
    log::get("auth")->warn("{} connection on {} {}; {} such refusal(s) so far", socket_name, endpoint, why,
                           handshake_failures_[key]);
  }
}

void Coordinator::warn_refused(const std::string& key, const std::string& what) {
  Millis now = clock_.now_ms();
  auto it = refused_logged_.find(key);
  if (it != refused_logged_.end() && now - it->second < 60000) return;
  if (refused_logged_.size() > 10000) refused_logged_.clear();  // bounded; at worst we log again
  refused_logged_[key] = now;
  log::get("auth")->warn("{}", what);
}

// After a restart, an agent's socket reconnects and delivers the heartbeats it queued while we
// were away; each used to earn a hello_required and then a hello (8 per agent, 79,000 hellos for
// 10,000 agents in the reconnect storm). One request per connection per heartbeat interval is
// enough: the agent's hello answers it, and if that is lost the next message after the interval
// asks again.
void Coordinator::ask_for_hello(const std::string& identity, Millis now, proto::MsgType ref) {
  if (hello_asked_.size() > 50000) {
    for (auto it = hello_asked_.begin(); it != hello_asked_.end();)
      it = now - it->second >= cfg_.heartbeat_interval_ms ? hello_asked_.erase(it) : std::next(it);
  }
  auto [asked, fresh] = hello_asked_.try_emplace(identity, now);
  if (!fresh && now - asked->second < cfg_.heartbeat_interval_ms) return;
  asked->second = now;
  send_to_host(identity, proto::ErrorMsg{"hello_required", "say hello first", static_cast<uint16_t>(ref), ""});
}

void Coordinator::disconnect_host(const std::string& host_id, const std::string& why) {
  auto* h = registry_.find(host_id);
  if (!h || !h->online) return;
  // Like a lost heartbeat, at once: no more orders go to it, rollouts count it as unknown.
  h->online = false;
  h->said_hello = false;
  registry_.close_udp_session(*h);  // its datagrams are an unknown session from now on
  L()->warn("{} is disconnected: {}", host_id, why);
  dirty_ = true;
  std::vector<uint64_t> ids;
  for (auto& [rid, a] : active_) if (a.state.find(host_id)) ids.push_back(rid);
  for (auto rid : ids) (void)apply(rid, rollout::EvHostLost{host_id});
}

// ---- timers -----------------------------------------------------------------

void Coordinator::on_timers() {
  Millis now = clock_.now_ms();
  if (now >= next_heartbeat_) {
    next_heartbeat_ = now + cfg_.heartbeat_interval_ms;
    if (!pending_acks_.empty()) {  // at most one write per interval, for orders still open
      std::vector<std::string> acks;
      for (auto& id : pending_acks_) {
        if (orders_.count(id)) acks.push_back(std::move(id));  // a reported one was written acked
      }
      pending_acks_.clear();
      if (auto s = store_->mark_acked(acks); !s.ok()) L()->error("{}", s.error().message);
    }
    // A heartbeat only to hosts that heard nothing from us for their period (the heartbeat
    // interval, or coordinator_heartbeat_ms for agents that announced support). Checked once
    // per interval, so a gap is at most period + interval, well inside misses x period.
    // The same bytes for every host: encoded once per tick, not once per host.
    std::string hb;
    for (fleet::HostRecord* hp : registry_.all()) {
      fleet::HostRecord& h = *hp;
      if (!h.online || !h.said_hello || now - h.last_sent < heartbeat_period(h)) continue;
      // A confirmed UDP session that hears us: our heartbeat is a datagram of the session, so
      // at rest the connection carries nothing either way.
      if (fleet::UdpSlot* slot = udp_ ? registry_.udp_slot(h.udp_session) : nullptr;
          slot && slot->confirmed && !slot->deaf && slot->peer.len) {
        auto d = transport::udp_hb::seal(slot->session, ++slot->sent_seq,
                                         std::string_view(reinterpret_cast<const char*>(slot->key.data()), slot->key.size()),
                                         transport::udp_hb::From::kCoordinator);
        if (udp_->send_to(d, slot->peer).ok()) {
          metrics_->udp_heartbeats_sent++;
          h.last_sent = now;
          continue;
        }
      }
      if (hb.empty()) hb = proto::encode(proto::Heartbeat{static_cast<uint64_t>(now)});
      auto s = transport::send_raw_to(*agents_, h.identity, hb);
      metrics_->messages_out++;
      if (!s.ok()) {
        L()->debug("send heartbeat to {} failed: {}", h.identity, s.error().message);
        continue;
      }
      h.last_sent = now;
    }
    // Resend unacknowledged orders.
    for (auto& [oid, o] : orders_) {
      if (!o.row.acked && (o.last_sent == 0 || now - o.last_sent >= cfg_.order_resend_ms)) send_order(o);
    }
  }
  // Hosts silent past the timeout become unknown. The registry says when the next one can
  // expire (the oldest last message + timeout) and poll_timeout_ms wakes the loop then: a dead
  // host is noticed right at the timeout, and 10,000 hosts are scanned about once per interval
  // instead of on a fixed tick.
  if (now >= next_expiry_) {
    const Millis timeout = static_cast<Millis>(cfg_.heartbeat_interval_ms) * cfg_.heartbeat_misses;
    // The hosts lost in one pass go to each rollout as one step (one commit), as the reports of
    // a pass do: a stall that expires hundreds of hosts must not add one fsync per host.
    std::map<uint64_t, std::vector<rollout::Event>> lost;
    for (const auto& host_id : registry_.expire(now, timeout, &next_expiry_)) {
      L()->warn("{} is unknown: no traffic for {} heartbeat intervals", host_id, cfg_.heartbeat_misses);
      metrics_->hosts_lost++;
      dirty_ = true;
      for (auto& [rid, a] : active_) if (a.state.find(host_id)) lost[rid].push_back(rollout::EvHostLost{host_id});
    }
    for (auto& [rid, evs] : lost) (void)apply_many(rid, evs, {});
    // Hosts whose datagrams stopped (a firewall, a changed route) hear it an interval before
    // they would expire, and heartbeat over their connection again.
    if (udp_) {
      const Millis quiet = static_cast<Millis>(cfg_.heartbeat_interval_ms) * std::min<uint32_t>(cfg_.heartbeat_misses - 1, 2);
      for (auto* h : registry_.udp_quiet(now, quiet, &next_expiry_)) {
        L()->info("{}: no heartbeat datagram for {} ms; asking it to heartbeat over its connection", h->host_id, now - h->last_seen);
        proto::Heartbeat back{static_cast<uint64_t>(now)};
        back.udp_lost = true;
        send_to_host(h->identity, back);
      }
    }
  }
  Millis wall = clock_.wall_ms();
  std::vector<uint64_t> due;
  for (auto& [id, a] : active_) {
    if (a.deadline > 0 && a.deadline <= wall) due.push_back(id);
  }
  for (auto id : due) (void)apply(id, rollout::EvTick{});
  checkpoint_at_rest(now);
}

// SQLite's own WAL checkpoint is off (coordinator/store/store.h, kWalCapPages): a checkpoint
// costs three fsyncs (the WAL, the database, the restarted WAL's header), so it runs here, when
// no rollout is active and nothing was written for kCheckpointQuietMs. A rollout started later
// finds an empty WAL whose header is already synced: one fsync per batch transition.
void Coordinator::checkpoint_at_rest(Millis now) {
  if (!active_.empty()) {
    ckpt_backlog_seen_ = -1;
    return;
  }
  const int64_t backlog = store_->wal_backlog();
  if (backlog == 0) return;
  if (backlog != ckpt_backlog_seen_) {  // written since the last look: the quiet period starts over
    ckpt_backlog_seen_ = backlog;
    ckpt_quiet_since_ = now;
    return;
  }
  if (now - ckpt_quiet_since_ < kCheckpointQuietMs) return;
  ckpt_quiet_since_ = now;  // a failed or unfinished one is tried again a quiet period later
  if (auto s = store_->checkpoint(); !s.ok()) {
    L()->warn("store: WAL checkpoint at rest failed: {}", s.error().message);
    return;
  }
  L()->info("store: WAL checkpointed at rest ({} pages, {} ms)", backlog, clock_.now_ms() - now);
  ckpt_backlog_seen_ = -1;
}

void Coordinator::publish() {
  Millis now = clock_.now_ms();
  // Bounded cost under heavy traffic: at most every 250 ms, and at most ~10% of the loop's
  // time when the snapshot itself is expensive (10,000 hosts).
  if (now - last_publish_ < std::max<Millis>(250, 10 * last_publish_cost_)) return;
  last_publish_ = now;
  dirty_ = false;
  // Cleared before building: a request that asks while this one is built gets the next one.
  refresh_wanted_.store(false);
  nlohmann::json status;
  try {
    nlohmann::json none = nlohmann::json::object();
    status = op_status(none, "http");
  } catch (const std::exception& e) {
    status = {{"error", e.what()}};
  }
  std::vector<const rollout::State*> act;
  for (const auto& [id, a] : active_) act.push_back(&a.state);
  std::string metrics = render_metrics(*metrics_, registry_, act);
  std::string status_text = status.dump();
  last_publish_cost_ = clock_.now_ms() - now;
  {
    std::lock_guard<std::mutex> lk(pub_mu_);
    published_.status_json = std::move(status_text);
    published_.metrics_text = std::move(metrics);
    published_at_ = now;
    ++published_seq_;
  }
  pub_cv_.notify_all();
}

}  // namespace gantry::coordinator
