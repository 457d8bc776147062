#include "coordinator/ha/standby_server.h"

#include <chrono>

#include "common/protocol/codec.h"
#include "common/transport/zmq_transport.h"
#include "common/util/log.h"
#include "common/util/text.h"
#include "coordinator/http/http_server.h"
#include "coordinator/server/artifact_chunk.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/handshake_guard.h"
#include "coordinator/server/keyring.h"
#include "coordinator/server/peer_artifact_fetcher.h"
#include "coordinator/server/peer_chunk_source.h"
#include "coordinator/server/peer_prefetch.h"
#include "coordinator/server/rollout_views.h"
#include "coordinator/server/zap_auth.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator::ha {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("standby");
  return l.get();
}
constexpr Millis kKeyReloadMs = 3000;
constexpr Millis kStatusEveryMs = 1000;
constexpr int kHistory = 20;
}  // namespace

StandbyServer::StandbyServer(const Config& cfg, Clock& clock, store::Store& store, std::string name,
                             PeerEndpoints& peers, ArtifactCopies& copies)
    : cfg_(cfg), clock_(clock), store_(store), name_(std::move(name)), peers_(peers), copies_(copies), ctx_(1) {
  transport::configure_context(ctx_);
}

StandbyServer::~StandbyServer() {
  if (http_) http_->stop();
  prefetch_.reset();
  fetcher_.reset();  // its worker stops; a copy under way leaves nothing
  // Sockets close before the context (member order), with no linger: the leader this process
  // may become binds the same endpoints next.
  for (auto* s : {agents_.get(), operators_.get()})
    if (s) s->set(zmq::sockopt::linger, 0);
  agents_.reset();
  operators_.reset();
  zap_.reset();
}

Status StandbyServer::start() {
  artifacts_ = std::make_unique<ArtifactStore>(cfg_.state_dir + "/artifacts");
  if (auto s = artifacts_->init(); !s.ok()) return s;
  fetcher_ = std::make_unique<PeerArtifactFetcher>(cfg_.state_dir + "/artifacts", peers_,
                                                   std::make_unique<ZmqChunkSource>(cfg_.curve));
  prefetch_ = std::make_unique<PeerPrefetch>(store_, *artifacts_, *fetcher_);
  prefetch_->set_copies(&copies_);
  keys_ = std::make_unique<KeyRing>(store_, clock_);
  if (auto s = keys_->load(); !s.ok()) return s;
  keys_->set_peer_key(cfg_.curve.public_key);  // the leader copying a release from this standby
  refusals_ = std::make_unique<RefusalLog>(clock_);
  const bool secure = cfg_.curve.enabled();
  try {
    agents_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    operators_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    transport::SocketOptions o;
    o.router_mandatory = true;
    o.max_msg_size = unaccepted::kAgentFrame;
    o.handshake_ivl_ms = unaccepted::kHandshakeIvlMs;
    o.curve = cfg_.curve;
    o.curve.server = true;
    o.curve.zap_domain = kZapDomainAgents;
    transport::SocketOptions op = o;
    op.max_msg_size = unaccepted::kOperatorFrame;
    op.curve.zap_domain = kZapDomainOperators;
    if (secure) {
      zap_ = std::make_unique<ZapAuth>(ctx_, *keys_, metrics_, *refusals_);
      if (auto s = zap_->bind(); !s.ok()) return s;
    }
    transport::configure(*agents_, o);
    if (Status st = transport::bind(*agents_, cfg_.agent_endpoint); !st.ok())
      return make_error("bind", "agent endpoint: " + st.error().message);
    endpoints_["agent"] = agents_->get(zmq::sockopt::last_endpoint);
    transport::configure(*operators_, op);
    if (Status st = transport::bind(*operators_, cfg_.operator_endpoint); !st.ok())
      return make_error("bind", "operator endpoint: " + st.error().message);
    endpoints_["operator"] = operators_->get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error("bind", std::string("cannot bind: ") + e.what());
  }
  status_text_ = status_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (!cfg_.http_address.empty()) {
    http_ = std::make_unique<HttpServer>(
        cfg_.http_address, HttpServer::RequestHandler([this](const HttpRequest& r) {
          if (r.path == "/status") {
            std::lock_guard<std::mutex> g(mu_);
            return HttpResponse(200, "application/json", status_text_);
          }
          if (r.path == "/metrics")
            return HttpResponse(200, "text/plain; version=0.0.4",
                                "# HELP gantry_coordinator_leader 1 on the leader, 0 "
                                "on a standby.\n# TYPE gantry_coordinator_leader "
                                "gauge\ngantry_coordinator_leader 0\n");
          if (r.path == "/healthz") return HttpResponse(200, "text/plain", "standby\n");
          return HttpResponse(503, "text/plain", "this coordinator is a standby: " + leader_text() + "\n");
        }));
    if (auto s = http_->start(); !s.ok()) return s;
    endpoints_["http"] = http_->bound_address();
  }
  L()->info("{} standing by: agents on {}, operators on {}, http on {}", name_, endpoints_["agent"],
            endpoints_["operator"], endpoints_.count("http") ? endpoints_["http"] : "off");
  return Status::Ok();
}

void StandbyServer::set_leader(std::optional<MemberInfo> leader) {
  std::lock_guard<std::mutex> g(mu_);
  leader_ = std::move(leader);
}

std::map<std::string, std::string> StandbyServer::leader_map() const {
  std::lock_guard<std::mutex> g(mu_);
  return leader_ ? leader_->endpoints() : std::map<std::string, std::string>{};
}

std::string StandbyServer::leader_text() const {
  std::lock_guard<std::mutex> g(mu_);
  if (!leader_) return "no leader is known right now";
  return "the leader is " + leader_->name + " (operators: " + leader_->operator_ep + ")";
}

void StandbyServer::serve_for(Millis ms) {
  std::vector<zmq::pollitem_t> items = {{agents_->handle(), 0, ZMQ_POLLIN, 0},
                                        {operators_->handle(), 0, ZMQ_POLLIN, 0}};
  const auto auth = zap_ ? zap_->poll_items() : std::vector<zmq::pollitem_t>{};
  items.insert(items.end(), auth.begin(), auth.end());
  try {
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(ms));
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) L()->error("poll failed: {}", e.what());
    return;
  }
  try {
    if (zap_) {
      std::vector<short> rev;
      for (size_t i = 2; i < items.size(); ++i) rev.push_back(items[i].revents);
      zap_->serve(rev);
    }
    if (items[0].revents & ZMQ_POLLIN) serve_agents();
    if (items[1].revents & ZMQ_POLLIN) serve_operators();
    const Millis now = clock_.now_ms();
    fetcher_->deliver();
    prefetch_->tick(now);
    if (now >= next_key_reload_) {
      next_key_reload_ = now + kKeyReloadMs;
      if (auto s = keys_->load(); !s.ok())
        L()->warn("cannot reload the key allowlists: {}", safe_text(s.error().message, 300));
    }
    if (now >= next_status_) {
      next_status_ = now + kStatusEveryMs;
      auto text = status_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      std::lock_guard<std::mutex> g(mu_);
      status_text_ = std::move(text);
    }
  } catch (const std::exception& e) {
    L()->error("standby loop turn failed: {}; continuing", e.what());
  }
}

void StandbyServer::serve_agents() {
  for (int i = 0; i < 1000; ++i) {
    bool dropped = false;
    auto in = transport::recv_routed(*agents_, &dropped);
    if (dropped) continue;
    if (!in) return;
    auto msg = proto::decode(in->payload);
    if (!msg) continue;  // garbage gets no answer here either
    if (cfg_.curve.enabled() && keys_->agent(in->user_id).host_id.empty()) continue;
    proto::ErrorMsg e;
    e.code = "not_leader";
    e.message = "this coordinator (" + name_ + ") is a standby; " + leader_text();
    e.ref_type = static_cast<uint16_t>(proto::type_of(*msg));
    e.leader = leader_map();
    if (auto s = transport::send_to(*agents_, in->identity, e); !s.ok())
      L()->debug("cannot answer an agent: {}", s.error().message);
  }
}

void StandbyServer::serve_operators() {
  for (int i = 0; i < 100; ++i) {
    bool dropped = false;
    auto in = transport::recv_routed(*operators_, &dropped);
    if (dropped) continue;
    if (!in) return;
    proto::OpReply reply;
    auto msg = proto::decode(in->payload);
    const auto* req = msg ? std::get_if<proto::OpRequest>(&*msg) : nullptr;
    if (req == nullptr) {
      reply.error = msg ? "not an operator request" : "bad request: " + msg.error().message;
    } else {
      reply.request_id = req->request_id;
      // With CURVE: an operator key, or this installation's own server key (a peer coordinator).
      const bool secure = cfg_.curve.enabled();
      const bool peer = secure && in->user_id == cfg_.curve.public_key;
      const auto* op = secure ? keys_->op(in->user_id) : nullptr;
      if (secure && !peer && (op == nullptr || op->state != "active")) {
        reply.error = "this operator key is not (or no longer) authorized";
      } else if (req->command == "status") {
        reply.ok = true;
        reply.result = status_json();
      } else if (req->command == "artifact-chunk" && (!secure || peer || op->role == "admin")) {
        // Another coordinator copying a release this one has (peer_artifact_fetcher.h).
        auto r = artifact_chunk(*artifacts_, req->args);
        if (r) {
          reply.ok = true;
          reply.result = std::move(*r);
        } else {
          reply.error = r.error().message;
        }
      } else {
        reply.error =
            "not_leader: this coordinator (" + name_ + ") is a standby and serves only `status`; " + leader_text();
        reply.error_code = "not_leader";
        reply.leader = leader_map();
      }
    }
    if (auto s = transport::send_to(*operators_, in->identity, reply); !s.ok())
      L()->debug("cannot answer an operator: {}", s.error().message);
  }
}

// The shape of the leader's status (rollout_views.h status_view), from the store: the newest
// rollout of each service, and the hosts as last recorded (their state "unknown": a standby
// hears no agent), with who this is and who leads.
nlohmann::json StandbyServer::status_json() {
  nlohmann::json j{{"role", "standby"}, {"name", name_}};
  const auto lm = leader_map();
  j["leader"] = lm.empty() ? nlohmann::json(nullptr) : nlohmann::json(lm);
  auto rollouts = latest_rollouts_view(store_, nullptr, "", false);
  if (rollouts) {
    j["rollouts"] = std::move(*rollouts);
  } else {
    j["rollouts"] = nlohmann::json::array();
    j["store_error"] = safe_text(rollouts.error().message, 300);
  }
  nlohmann::json hosts = nlohmann::json::array();
  const Millis now = clock_.wall_ms();
  if (auto rows = store_.hosts(); rows) {
    for (const auto& r : *rows) {
      nlohmann::json services = nlohmann::json::array();
      for (const auto& sv : r.services) {
        nlohmann::json one = sv;
        if (one.is_object() && !one.contains("state")) one["state"] = "idle";
        services.push_back(std::move(one));
      }
      hosts.push_back({{"host_id", r.host_id},
                       {"state", "unknown"},
                       {"labels", r.labels.is_object() ? r.labels : nlohmann::json::object()},
                       {"services", std::move(services)},
                       {"last_seen_ms_ago", r.last_seen > 0 ? std::max<Millis>(0, now - r.last_seen) : -1}});
    }
  }
  j["hosts"] = std::move(hosts);
  return j;
}

}  // namespace gantry::coordinator::ha
