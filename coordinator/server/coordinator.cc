#include "coordinator/server/coordinator.h"

#include "coordinator/server/convergence.h"

#include <algorithm>
#include <cstdlib>

#include "common/transport/zmq_transport.h"
#include "common/util/fs.h"
#include "common/util/log.h"
#include "coordinator/analysis/analysis_scheduler.h"
#include "coordinator/http/http_server.h"
#include "coordinator/server/agent_channel.h"
#include "coordinator/server/agent_sender.h"
#include "coordinator/server/artifact_copies.h"
#include "coordinator/server/artifact_server.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/checkpoint_policy.h"
#include "coordinator/server/http_routes.h"
#include "coordinator/server/keyring.h"
#include "coordinator/server/operator_api.h"
#include "coordinator/server/peer_artifact_fetcher.h"
#include "coordinator/server/peer_chunk_source.h"
#include "coordinator/server/requested_views.h"
#include "coordinator/server/rollout_executor.h"
#include "coordinator/server/rollout_views.h"
#include "coordinator/server/status_snapshot.h"
#include "coordinator/server/udp_heartbeats.h"
#include "coordinator/server/zap_auth.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
}  // namespace

Coordinator::Coordinator(Config cfg, Clock& clock, std::unique_ptr<store::Store> store, uint64_t epoch)
    : cfg_(std::move(cfg)),
      clock_(clock),
      ctx_(static_cast<int>(std::clamp<uint32_t>(cfg_.io_threads, 1, 16))),
      epoch_(epoch),
      store_(std::move(store)) {
  transport::configure_context(ctx_);
}

Coordinator::~Coordinator() {
  if (http_) http_->stop();
}

Status Coordinator::start() {
  if (auto s = fs::make_dirs(cfg_.state_dir, 0700); !s.ok()) return s;
  if (!store_) {
    auto st = store::Store::open(cfg_.state_dir + "/coordinator.db");
    if (!st) return st.error();
    store_ = std::move(*st);
  }
  if (epoch_ == 0) {
    auto ep = store_->bump_epoch();
    if (!ep) return ep.error();
    epoch_ = *ep;
  }
  artifacts_ = std::make_unique<ArtifactStore>(cfg_.state_dir + "/artifacts");
  if (auto s = artifacts_->init(); !s.ok()) return s;

  // Hosts known from before: online (with a grace period: restart_grace_ms, at least the heartbeat
  // timeout) until they say hello or stay silent past it.
  const Millis started = clock_.now_ms();
  auto hosts = store_->hosts();
  if (!hosts) return hosts.error();
  for (const auto& h : *hosts) {
    fleet::HostRecord r;
    r.host_id = h.host_id;
    r.identity = h.host_id;
    for (auto& [k, v] : h.labels.items())
      if (v.is_string()) r.labels[k] = v.get<std::string>();
    for (const auto& s : h.services) {
      fleet::ServiceView v;
      v.current_version = s.value("current_version", "");
      v.previous_version = s.value("previous_version", "");
      r.services[s.value("name", "")] = v;
    }
    r.online = true;
    r.said_hello = false;
    r.last_seen = started;
    r.grace_until = started + cfg_.restart_grace_ms;
    r.last_seen_wall = h.last_seen;
    r.first_seen_wall = h.first_seen;
    registry_.restore(std::move(r));
  }

  // The sockets exist before the parts that send on them; they are bound below.
  try {
    agents_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    pub_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pub);
    operators_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
  } catch (const zmq::error_t& e) {
    return make_error("bind", std::string("cannot create sockets: ") + e.what());
  }
  sender_ = std::make_unique<AgentSender>(*agents_, registry_, metrics_, clock_, cfg_.heartbeat_interval_ms, epoch_);
  signals_ = std::make_unique<PubSignalSink>(*pub_, metrics_, epoch_);
  executor_ = std::make_unique<RolloutExecutor>(*store_, clock_, *sender_, *signals_, metrics_, changed_);
  // Active rollouts and their open orders, exactly as last persisted.
  if (auto s = executor_->restore(); !s.ok()) return s;
  convergence_ = std::make_unique<Convergence>(*executor_, *store_, registry_, clock_);
  prom_ = std::make_unique<analysis::HttpPromQuerier>();
  query_runner_ = std::make_unique<analysis::ThreadedQueryRunner>(*prom_);
  analysis_ = std::make_unique<analysis::AnalysisScheduler>(
      *executor_, registry_, *query_runner_, metrics_, cfg_.prometheus, [this] { return executor_->decision_now(); });

  // Allowlists first: the ZAP handler answers from them as soon as a socket is bound.
  keys_ = std::make_unique<KeyRing>(*store_, clock_);
  if (auto s = keys_->load(); !s.ok()) return s;
  keys_->set_peer_key(cfg_.curve.public_key);  // its own key on the operator socket: a peer coordinator
  // A bootstrap flag naming a key an admin has revoked or rejected is refused and logged; the
  // coordinator still starts, so rollouts keep running while the unit file is corrected.
  const auto bootstrap = [](const Status& s) -> Status {
    if (s.ok() || s.error().code != "revoked") return s;
    L()->error("{}", s.error().message);
    return Status::Ok();
  };
  for (const auto& [name, key] : cfg_.admin_keys)
    if (auto s = bootstrap(keys_->bootstrap_operator(name, key, Role::kAdmin)); !s.ok()) return s;
  for (const auto& [host, key] : cfg_.accept_agent_keys)
    if (auto s = bootstrap(keys_->bootstrap_agent(host, key)); !s.ok()) return s;
  if (secure() && !keys_->has_admin())
    L()->warn("no admin operator key is enrolled: operators cannot manage keys (start with --admin-key FILE)");
  refusals_ = std::make_unique<RefusalLog>(clock_);
  udp_ = std::make_unique<UdpHeartbeats>(cfg_, registry_, *sender_, metrics_, *refusals_, clock_);
  artifact_server_ = std::make_unique<ArtifactServer>(*store_, *artifacts_, *sender_, metrics_, clock_);
  if (peers_) {
    peer_fetcher_ = std::make_unique<PeerArtifactFetcher>(cfg_.state_dir + "/artifacts", *peers_,
                                                          std::make_unique<ZmqChunkSource>(cfg_.curve));
    artifact_server_->set_missing(peer_fetcher_.get());
    peer_fetcher_->set_metrics(&metrics_);  // gantry_peer_artifact_* (docs/MONITORING.md)
    // Not a prefetch pass as standbys run (its store read every 2 s, in this loop, would wait
    // out a dead etcd member's call deadline every 2 s): a copy this leader fetches on demand
    // is recorded here.
    if (copies_) {
      peer_fetcher_->subscribe([this](const std::string& sha, const Status& st) {
        if (!st.ok()) return;
        if (auto s = copies_->record({sha}, {}); !s.ok())
          L()->warn("cannot record that this coordinator holds artifact {}: {}", sha, s.error().message);
      });
    }
  }
  channel_ = std::make_unique<AgentChannel>(AgentChannel::Deps{cfg_, clock_, *agents_, registry_, *keys_, *store_,
                                                               *executor_, *artifact_server_, *udp_, *sender_, metrics_,
                                                               *refusals_, changed_, epoch_});
  operator_api_ = std::make_unique<OperatorApi>(OperatorApi::Deps{
      *store_, *executor_, registry_, *artifacts_, *keys_, metrics_, changed_, clock_, secure(), epoch_,
      [this](const std::string& host_id, const std::string& why) { channel_->disconnect_host(host_id, why); }});
  operator_api_->set_convergence(convergence_.get());
  operator_api_->set_copies(copies_);
  if (cfg_.etcd()) operator_api_->set_leader_name(cfg_.name);
  snapshot_ = std::make_unique<StatusSnapshot>(clock_, changed_, [this] {
    Published p;
    try {
      p.status_json = operator_api_->status("", /*with_timelines=*/true)
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } catch (const std::exception& e) {
      L()->error("cannot build the status snapshot: {}", e.what());
      p.failed = true;
      p.status_json =
          nlohmann::json{{"error", e.what()}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    std::vector<const rollout::State*> act;
    for (const auto& [id, a] : executor_->active()) act.push_back(&a.state);
    p.metrics_text = render_metrics(metrics_, registry_, act);
    return p;
  });
  // `rollout plan` runs each analysis query once; it blocks this loop for at most the querier's
  // timeouts per query (a plan preview is rare and an operator waits for it anyway).
  operator_api_->set_analysis_preview([this](const rollout::AnalysisSpec& spec, const std::string& service,
                                             const std::vector<rollout::HostCandidate>& hosts) {
    return analysis::AnalysisScheduler::preview(spec, service, hosts, cfg_.prometheus, *prom_);
  });
  checkpoint_ = std::make_unique<CheckpointAtRest>(*store_);

  if (auto s = bind_sockets(); !s.ok()) return s;
  if (!cfg_.http_address.empty()) {
    views_ = std::make_unique<RequestedViews>(clock_, [this](const std::string& key) { return build_view(key); });
    routes_ = std::make_unique<HttpRoutes>(*snapshot_, *views_);
    http_ = std::make_unique<HttpServer>(
        cfg_.http_address, HttpServer::RequestHandler([this](const HttpRequest& r) { return routes_->handle(r); }));
    if (auto s = http_->start(); !s.ok()) return s;
    endpoints_["http"] = http_->bound_address();
  } else {
    endpoints_["http"] = "";
  }
  nlohmann::json ej(endpoints_);
  if (auto s = fs::write_file_atomic(cfg_.state_dir + "/endpoints.json", ej.dump() + "\n"); !s.ok()) return s;
  L()->info(
      "coordinator epoch {} serving agents on {} (heartbeat datagrams: {}), broadcasts on {}, operators on {}, http on "
      "{}",
      epoch_, endpoints_["agent"], endpoints_["udp_heartbeat"].empty() ? "off" : "udp " + endpoints_["udp_heartbeat"],
      endpoints_["pub"], endpoints_["operator"], endpoints_["http"]);
  snapshot_->publish();
  return Status::Ok();
}

Status Coordinator::bind_sockets() {
  transport::SocketOptions agent_opts;
  agent_opts.router_mandatory = true;
  // Without CURVE the routing id is the host id, and a reconnecting agent takes it over. With
  // CURVE agents get random routing ids and are known by their key, so nobody can take over
  // another connection's id.
  agent_opts.router_handover = !secure();
  agent_opts.max_msg_size = unaccepted::kAgentFrame;
  agent_opts.handshake_ivl_ms = unaccepted::kHandshakeIvlMs;
  // 10,000 agents reconnecting after a restart (libzmq's default: 100). The kernel caps it at
  // net.core.somaxconn (4096 by default): a full queue drops SYNs, and agents wait out 1, 2, 4 s
  // SYN timers (docs/BENCHMARKS.md, figure 4), so a large fleet's host should raise that.
  agent_opts.backlog = 65535;
  agent_opts.curve = cfg_.curve;
  agent_opts.curve.server = true;
  agent_opts.curve.zap_domain = kZapDomainAgents;
  transport::SocketOptions op_opts = agent_opts;
  op_opts.max_msg_size = unaccepted::kOperatorFrame;
  op_opts.router_handover = false;
  op_opts.curve.zap_domain = kZapDomainOperators;
  transport::SocketOptions pub_opts;
  pub_opts.max_msg_size = unaccepted::kPubFrame;  // subscribers only send subscriptions
  pub_opts.handshake_ivl_ms = unaccepted::kHandshakeIvlMs;
  pub_opts.backlog = 65535;
  pub_opts.curve = cfg_.curve;
  pub_opts.curve.server = true;
  pub_opts.curve.zap_domain = kZapDomainPub;
  if (secure()) {
    // The ZAP handler lives in this loop; it is bound before any server socket.
    zap_ = std::make_unique<ZapAuth>(ctx_, *keys_, metrics_, *refusals_);
    if (auto s = zap_->bind(); !s.ok()) return s;
  }
  try {
    transport::configure(*agents_, agent_opts);
    if (Status st = transport::bind(*agents_, cfg_.agent_endpoint); !st.ok())
      return make_error("bind", "agent endpoint: " + st.error().message);
    endpoints_["agent"] = agents_->get(zmq::sockopt::last_endpoint);
    if (Status st = udp_->open(endpoints_["agent"]); !st.ok()) return st;
    endpoints_["udp_heartbeat"] = udp_->endpoint();
    transport::configure(*pub_, pub_opts);
    // Subscribers on all I/O threads but the first (Config::io_threads); set before bind.
    if (int io = ctx_.get(zmq::ctxopt::io_threads); io > 1)
      pub_->set(zmq::sockopt::affinity, ((uint64_t{1} << io) - 1) & ~uint64_t{1});
    if (Status st = transport::bind(*pub_, cfg_.pub_endpoint); !st.ok())
      return make_error("bind", "pub endpoint: " + st.error().message);
    endpoints_["pub"] = pub_->get(zmq::sockopt::last_endpoint);
    transport::configure(*operators_, op_opts);
    if (Status st = transport::bind(*operators_, cfg_.operator_endpoint); !st.ok())
      return make_error("bind", "operator endpoint: " + st.error().message);
    endpoints_["operator"] = operators_->get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error("bind", std::string("cannot bind: ") + e.what());
  }
  if (zap_) {
    // Peers nobody accepted hold at most a fixed amount (handshake_guard.h): each socket keeps at
    // most so many connections in their handshake, each with at most one frame of its limit.
    const auto guard = [this](const std::string& name, const std::string& endpoint, size_t cap, Millis evict_after) {
      const auto hp = transport::tcp_host_port(endpoint);
      const int port = hp ? std::atoi(hp->port.c_str()) : -1;
      return std::make_unique<HandshakeGuard>(name, HandshakeGuard::Limits{cap, unaccepted::kWindowMs, evict_after},
                                              clock_, [port](int fd) { return shutdown_connection(fd, port); });
    };
    auto agent_guard = guard("agent", endpoints_["agent"], unaccepted::kAgentUnproven, unaccepted::kEvictAfterMs);
    auto op_guard = guard("operator", endpoints_["operator"], unaccepted::kOperatorUnproven, unaccepted::kEvictAfterMs);
    channel_->on_connection_proven([g = agent_guard.get()](int fd) { g->proven(fd); });
    operator_api_->on_connection_proven([g = op_guard.get()](int fd) { g->proven(fd); });
    if (auto s = zap_->monitor(*agents_, "agent", true, std::move(agent_guard)); !s.ok()) return s;
    if (auto s = zap_->monitor(*operators_, "operator", true, std::move(op_guard)); !s.ok()) return s;
    if (auto s = zap_->monitor(*pub_, "pub", false, guard("pub", endpoints_["pub"], unaccepted::kPubUnproven, 0));
        !s.ok())
      return s;
    L()->info(
        "peers nobody accepted can make this coordinator hold at most {} KiB: at most {} agent, {} operator and "
        "{} subscriber connections in their handshake at once, each with one frame of at most {}, {} and {} KiB "
        "plus {} KiB of libzmq's buffers, for at most {} ms",
        unaccepted::bound_bytes() / 1024, unaccepted::kAgentUnproven, unaccepted::kOperatorUnproven,
        unaccepted::kPubUnproven, unaccepted::kAgentFrame / 1024, unaccepted::kOperatorFrame / 1024,
        unaccepted::kPubFrame / 1024, unaccepted::kConnectionOverhead / 1024, unaccepted::kHandshakeIvlMs);
  }
  return Status::Ok();
}

void Coordinator::run(const std::atomic<bool>& stop) {
  next_heartbeat_ = clock_.now_ms();
  // A frozen wait: late by more than an interval. Input left unread by a budget: judged at
  // most one heartbeat timeout late.
  heard_ = HeardThrough(clock_.now_ms(), cfg_.heartbeat_interval_ms,
                        static_cast<Millis>(cfg_.heartbeat_interval_ms) * cfg_.heartbeat_misses);
  while (!stop) {
    loop_turns_.fetch_add(1, std::memory_order_relaxed);
    Millis turn = clock_.now_ms();
    const bool hold_agents = agents_at_rest_ && turn - last_agent_drain_ < kRestBatchMs;
    Millis timeout = poll_timeout_ms();
    if (hold_agents) timeout = std::min(timeout, last_agent_drain_ + kRestBatchMs - turn);
    // Heartbeat datagrams are held with the agents' heartbeats at rest (the same 10 ms batching).
    std::vector<zmq::pollitem_t> items = {
        {agents_->handle(), 0, static_cast<short>(hold_agents ? 0 : ZMQ_POLLIN), 0},
        {operators_->handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, udp_->fd(), static_cast<short>(hold_agents || !udp_->enabled() ? 0 : ZMQ_POLLIN), 0}};
    const auto auth_items = zap_ ? zap_->poll_items() : std::vector<zmq::pollitem_t>{};
    items.insert(items.end(), auth_items.begin(), auth_items.end());
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      L()->error("poll failed: {}", e.what());
      continue;
    }
    heard_.waited(turn, timeout, clock_.now_ms(), !hold_agents);
    try {
      serve(items.data(), {items.begin() + 3, items.end()});
    } catch (const std::exception& e) {
      // The parts catch what escapes one message's handler; this is the last line: the turn's
      // remaining work waits for the next turn, and the loop goes on serving.
      metrics_.handler_errors++;
      L()->error("event loop turn failed: {}; continuing", e.what());
    }
  }
  if (auto s = store_->flush(); !s.ok()) L()->error("cannot write the reports held back: {}", s.error().message);
  L()->info("coordinator stopping");
}

void Coordinator::serve(const zmq::pollitem_t* items, const std::vector<zmq::pollitem_t>& auth_items) {
  if (zap_) {
    std::vector<short> revents;
    for (const auto& it : auth_items) revents.push_back(it.revents);
    zap_->serve(revents);
  }
  const bool agent_pass = items[0].revents & ZMQ_POLLIN;
  if (agent_pass) {
    last_agent_drain_ = clock_.now_ms();
    if (!channel_->drain()) heard_.left_unread();
    // Never while a rollout runs or an order is open: a report must not wait for the batching.
    agents_at_rest_ = !channel_->events_in_last_pass() && executor_->idle();
  }
  if (items[2].revents & ZMQ_POLLIN) {
    if (!udp_->drain()) heard_.left_unread();
    // Datagrams are heartbeats only: a turn with nothing else keeps (or puts) the loop at
    // rest, with its batching clock, as a heartbeat-only pass over the agent socket does.
    if (!(agent_pass && channel_->events_in_last_pass())) {
      last_agent_drain_ = clock_.now_ms();
      agents_at_rest_ = executor_->idle();
    }
  }
  if (peer_fetcher_) peer_fetcher_->deliver();
  if (artifact_server_->has_deferred()) artifact_server_->serve_deferred();
  if (items[1].revents & ZMQ_POLLIN) operator_api_->serve(*operators_);
  on_timers();
  snapshot_->on_loop_turn();
  if (views_) views_->on_loop_turn();
}

// A view /rollouts or /rollouts/ID asked for (http_routes.h), on the loop's thread.
BuiltView Coordinator::build_view(const std::string& key) {
  BuiltView v;
  const auto dump = [](const nlohmann::json& j) {
    return std::make_shared<const std::string>(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  };
  try {
    Expected<nlohmann::json> j = nlohmann::json();
    if (key == "history") {
      j = history_view(*store_, "", HttpRoutes::kHistoryLimit);
    } else if (key.rfind("rollout/", 0) == 0) {
      j = rollout_view_by_id(*store_, *executor_, std::stoull(key.substr(8)), /*with_events=*/true);
      if (j && j->contains("events") && (*j)["events"].size() > static_cast<size_t>(HttpRoutes::kEventsKept)) {
        auto& ev = (*j)["events"];
        (*j)["events_left_out"] = ev.size() - HttpRoutes::kEventsKept;
        ev.erase(ev.begin(), ev.end() - HttpRoutes::kEventsKept);
      }
    }
    if (!j) {
      v.status = j.error().code == "not_found" ? 404 : 500;
      v.body = dump({{"error", j.error().message}});
    } else {
      v.body = dump(*j);
    }
  } catch (const std::exception& e) {
    L()->error("cannot build the HTTP view {}: {}", key, e.what());
    v.status = 500;
    v.body = dump({{"error", e.what()}});
  }
  return v;
}

Millis Coordinator::poll_timeout_ms() {
  Millis now = clock_.now_ms();
  Millis t = std::min<Millis>(100, std::max<Millis>(0, std::min(next_heartbeat_, next_expiry_) - now));
  if (artifact_server_->has_deferred()) t = std::min<Millis>(t, 1);  // the I/O thread frees budget silently
  if (Millis due = analysis_->next_due(); due > 0)
    t = std::min(t, std::max<Millis>(0, due - executor_->decision_now()));
  if (Millis deadline = executor_->next_deadline(); deadline > 0)
    t = std::min(t, std::max<Millis>(0, deadline - executor_->decision_now()));
  return t;
}

void Coordinator::on_timers() {
  Millis now = clock_.now_ms();
  if (now >= next_heartbeat_) {
    next_heartbeat_ = now + cfg_.heartbeat_interval_ms;
    // At most one write per interval, for orders still open.
    if (auto s = executor_->flush_acks(); !s.ok())
      L()->error("cannot record order acknowledgements: {}", s.error().message);
    if (auto s = store_->flush(); !s.ok()) L()->error("cannot write the reports held back: {}", s.error().message);
    channel_->heartbeat(now);
    executor_->resend_unacked(cfg_.order_resend_ms);
  }
  // Hosts silent past the timeout become unknown. The registry says when the next one can
  // expire (the oldest last message + timeout) and poll_timeout_ms wakes the loop then: a dead
  // host is noticed right at the timeout, and 10,000 hosts are scanned about once per interval
  // instead of on a fixed tick. Silence is measured up to when the agents' input was last read
  // whole (heard_through.h), not to now: after a turn stalled (a store write riding out an etcd
  // election), the heartbeats that wait unread are read before any host is judged.
  if (now >= next_expiry_) {
    const Millis heard = heard_.through();
    const Millis timeout = static_cast<Millis>(cfg_.heartbeat_interval_ms) * cfg_.heartbeat_misses;
    const auto lost = registry_.expire(heard, timeout, &next_expiry_);
    for (const auto& host_id : lost) {
      L()->warn("{} is unknown: no traffic for {} heartbeat intervals", host_id, cfg_.heartbeat_misses);
      metrics_.hosts_lost++;
      changed_.mark();
    }
    if (auto s = executor_->hosts_lost(lost); !s.ok())
      L()->error("cannot record {} lost host(s) in their rollouts: {}", lost.size(), s.error().message);
    udp_->check_quiet(heard, now, &next_expiry_);
    // Heard lags now by this turn's work: check again at the next turn, not in a spin.
    next_expiry_ = std::max(next_expiry_, now + 1);
  }
  // Deadlines are judged up to when the agents' input was read whole, as silence is: a report
  // that waits unread behind a stalled turn is read before its host is timed out.
  if (auto s = executor_->tick(clock_.now_ms() - heard_.through()); !s.ok())
    L()->error("cannot step a rollout past its deadline: {}", s.error().message);
  analysis_->tick();
  convergence_->tick();
  metrics_.drifted_hosts = convergence_->counts();
  checkpoint_->tick(now, !executor_->active().empty());
}

}  // namespace gantry::coordinator
