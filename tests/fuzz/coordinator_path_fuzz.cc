// Bytes through the coordinator's own handlers, to the store and to every JSON view.
//
// Covers: proto::decode of the payload, then the real AgentChannel::on_message (hello, report,
// progress, ack, heartbeat, fetch, error; replies go to an unconnected inproc ROUTER, UDP
// heartbeats closed) with its group commit (flush), or OperatorApi::handle for an OpRequest (as
// an admin) and the encoding of its reply. Behind them: the real RolloutExecutor (orders to a
// recording OrderSink, signals to a no-op SignalSink, a FakeClock) over a real SQLite store in a
// temp dir under $TMPDIR (/tmp when unset), built once per process, with a rollout of "web" kept
// active (restarted whenever none is) so reports and progress reach its state machine. After
// every input the views are rendered and dumped with nlohmann's default (throwing) error
// handler: OperatorApi::status(), status_view, each active rollout's rollout_view_by_id with its
// events, and render_metrics. An exception escaping any of them is a crash here (the daemon's
// loop would only log and drop the message). State carries over from input to input, as in a
// running coordinator.
//
// Input: byte 0 picks the connection (bits 0-1: web-1..web-4, the routing id being the host id)
// and options; the rest is the frame as read from the agent socket. Bit 4: the frame goes
// through a second AgentChannel over the same fleet with CURVE on (its per-message key checks;
// no handshake runs here), from the key bits 2-3 pick: the host's accepted key, a pending key,
// a key never seen, or none; without it CURVE is off. Bit 5: the clock advances 5 s and the
// rollouts tick. Bit 6: a Report/Progress/OrderAck gets the order id (and a Report the rollout
// id and service) of the last order sent to that host, so reports reach open orders.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "common/protocol/codec.h"
#include "common/util/log.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/agent_channel.h"
#include "coordinator/server/agent_sender.h"
#include "coordinator/server/artifact_server.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/keyring.h"
#include "coordinator/server/metrics.h"
#include "coordinator/server/operator_api.h"
#include "coordinator/server/rollout_executor.h"
#include "coordinator/server/rollout_views.h"
#include "coordinator/server/udp_heartbeats.h"
#include "coordinator/server/zap_auth.h"
#include "coordinator/store/store.h"

namespace {

using namespace gantry;
using namespace gantry::coordinator;

// The executor's order seam: remembers the last order per host (bit 6 of the input uses it).
struct RecordingOrders : OrderSink {
  std::map<std::string, proto::Order> last;
  bool send_order(const std::string& host_id, const proto::Order& order) override {
    last[host_id] = order;
    return true;
  }
};

struct QuietSignals : SignalSink {
  Status broadcast(rollout::SignalKind, uint64_t, const std::string&) override { return Status::Ok(); }
};

[[noreturn]] void die(const std::string& what) {
  fprintf(stderr, "coordinator_path fuzz setup: %s\n", what.c_str());
  std::abort();
}

struct World {
  std::string dir;
  Config cfg;
  Config secure_cfg;                   // CURVE on: only enabled() is consulted, no socket handshakes here
  std::vector<std::string> host_keys;  // web-1..web-4's accepted keys
  std::string pending_key, unknown_key;
  FakeClock clock;
  std::unique_ptr<store::Store> store;
  RecordingOrders orders;
  QuietSignals signals;
  Metrics metrics;
  ChangeFlag changed;
  fleet::Registry registry;
  zmq::context_t ctx{1};
  zmq::socket_t agents{ctx, zmq::socket_type::router};
  std::unique_ptr<ArtifactStore> artifacts;
  std::unique_ptr<KeyRing> keys;
  std::unique_ptr<RolloutExecutor> exec;
  std::unique_ptr<AgentSender> sender;
  std::unique_ptr<RefusalLog> refusals;
  std::unique_ptr<UdpHeartbeats> udp;
  std::unique_ptr<ArtifactServer> artifact_server;
  std::unique_ptr<AgentChannel> channel;
  std::unique_ptr<AgentChannel> secure_channel;
  std::unique_ptr<OperatorApi> api;

  World() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/gantry-fuzz-coordinator-XXXXXX";
    if (!mkdtemp(tmpl.data())) die("mkdtemp");
    dir = tmpl;
    auto st = store::Store::open(dir + "/coordinator.db");
    if (!st) die(st.error().message);
    store = std::move(*st);
    for (const char* v : {"v1", "v2"}) {
      store::ReleaseRow r;
      r.service = "web";
      r.version = v;
      r.sha256 = std::string(64, 'a');
      r.size = 1234;
      r.path = "/nonexistent/" + r.version;
      r.created_at = 1;
      if (!store->put_release(r).ok()) die("put_release");
    }
    agents.bind("inproc://fuzz-agents");
    artifacts = std::make_unique<ArtifactStore>(dir + "/artifacts");
    if (!artifacts->init().ok()) die("artifacts");
    keys = std::make_unique<KeyRing>(*store, clock);
    if (!keys->load().ok()) die("keys");
    for (int i = 1; i <= 6; ++i) {
      char pub[41], sec[41];
      if (zmq_curve_keypair(pub, sec) != 0) die("zmq_curve_keypair");
      if (i <= 4) {
        host_keys.push_back(pub);
        if (!keys->bootstrap_agent("web-" + std::to_string(i), pub).ok()) die("bootstrap_agent");
      } else if (i == 5) {
        pending_key = pub;
        (void)keys->zap("gantry", pending_key, "198.18.0.1");  // recorded as pending
      } else {
        unknown_key = pub;
        secure_cfg.curve.secret_key = sec;
      }
    }
    sender = std::make_unique<AgentSender>(agents, registry, metrics, clock, cfg.heartbeat_interval_ms, 1);
    exec = std::make_unique<RolloutExecutor>(*store, clock, orders, signals, metrics, changed);
    refusals = std::make_unique<RefusalLog>(clock);
    udp = std::make_unique<UdpHeartbeats>(cfg, registry, *sender, metrics, *refusals, clock);
    artifact_server = std::make_unique<ArtifactServer>(*store, *artifacts, *sender, metrics, clock);
    channel = std::make_unique<AgentChannel>(AgentChannel::Deps{cfg, clock, agents, registry, *keys, *store, *exec,
                                                                *artifact_server, *udp, *sender, metrics, *refusals,
                                                                changed, /*epoch=*/1});
    secure_channel = std::make_unique<AgentChannel>(AgentChannel::Deps{secure_cfg, clock, agents, registry, *keys,
                                                                       *store, *exec, *artifact_server, *udp, *sender,
                                                                       metrics, *refusals, changed, /*epoch=*/1});
    api = std::make_unique<OperatorApi>(OperatorApi::Deps{
        *store, *exec, registry, *artifacts, *keys, metrics, changed, clock, /*secure=*/false,
        /*epoch=*/1, [this](const std::string& host, const std::string& why) { channel->disconnect_host(host, why); }});
    for (int i = 1; i <= 4; ++i) greet("web-" + std::to_string(i));
    channel->flush();
  }

  void greet(const std::string& host) {
    proto::Hello h;
    h.protocol_version = proto::kProtocolVersion;
    h.host_id = host;
    h.agent_version = "fuzz";
    h.labels = {{"role", "web"}};
    h.services.push_back({"web", "v1", "", "idle", ""});
    channel->on_message({host, proto::encode(h), ""});
  }

  // A rollout of web stays active: a new one starts (to whichever version it can) when none is.
  void keep_rollout_active() {
    if (exec->busy("web")) return;
    for (const char* version : {"v2", "v1"}) {
      RolloutExecutor::StartRequest req;
      req.service = "web";
      req.version = version;
      req.plan = {{"batches", {"1", "100%"}}};
      for (int i = 1; i <= 4; ++i) {
        std::string host = "web-" + std::to_string(i);
        const auto* rec = registry.find(host);
        std::string running = "v1";
        if (rec) {
          auto it = rec->services.find("web");
          if (it != rec->services.end()) running = it->second.current_version;
        }
        req.hosts.push_back({host, {{"role", "web"}}, running, rec != nullptr});
      }
      req.who = "fuzz";
      if (exec->start(std::move(req))) return;
    }
  }

  void render() {
    (void)api->status().dump();
    (void)api->status("web").dump();
    if (auto v = status_view(*store, *exec, registry, 1, clock.wall_ms())) (void)v->dump();
    std::vector<const rollout::State*> active;
    for (const auto& [id, a] : exec->active()) {
      active.push_back(&a.state);
      if (auto v = rollout_view_by_id(*store, *exec, id, /*with_events=*/true)) (void)v->dump();
    }
    (void)render_metrics(metrics, registry, active);
  }
};

World* world = nullptr;

// Gives a report, progress or ack the ids of the last order sent to `host` (so it is open).
void aim_at_open_order(World& w, const std::string& host, proto::Message& m) {
  auto it = w.orders.last.find(host);
  if (it == w.orders.last.end()) return;
  const proto::Order& o = it->second;
  if (auto* r = std::get_if<proto::Report>(&m)) {
    r->order_id = o.order_id;
    r->rollout_id = o.rollout_id;
    r->service = o.service;
  } else if (auto* p = std::get_if<proto::Progress>(&m)) {
    p->order_id = o.order_id;
  } else if (auto* a = std::get_if<proto::OrderAck>(&m)) {
    a->order_id = o.order_id;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  gantry::log::setup("fuzz", "off");
  world = new World();
  // The temp dir goes when the run ends (a crash leaves it, with the state it crashed in).
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(world->dir, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  World& w = *world;
  const uint8_t flags = data[0];
  const std::string host = "web-" + std::to_string(1 + (flags & 3));
  std::string payload(reinterpret_cast<const char*>(data + 1), size - 1);
  w.keep_rollout_active();
  if (flags & 0x20) {
    w.clock.advance(5000);
    (void)w.exec->tick();
  }
  auto msg = gantry::proto::decode(payload);
  if (msg && (flags & 0x40)) {
    aim_at_open_order(w, host, *msg);
    payload = gantry::proto::encode(*msg);
  }
  if (msg && std::holds_alternative<gantry::proto::OpRequest>(*msg)) {
    auto rep = w.api->handle(std::get<gantry::proto::OpRequest>(*msg), "fuzz-operator", Role::kAdmin);
    (void)gantry::proto::encode(rep);
  } else if (flags & 0x10) {
    const int key = (flags >> 2) & 3;
    std::string user_id = key == 0   ? w.host_keys[flags & 3]
                          : key == 1 ? w.pending_key
                          : key == 2 ? w.unknown_key
                                     : std::string();
    w.secure_channel->on_message({host, payload, user_id});
    w.secure_channel->flush();
    (void)w.exec->flush_acks();
  } else {
    w.channel->on_message({host, payload, ""});
    w.channel->flush();
    (void)w.exec->flush_acks();
  }
  // A host the input took out (a revoked key, a rejected hello) says hello again.
  for (int i = 1; i <= 4; ++i) {
    std::string h = "web-" + std::to_string(i);
    const auto* rec = w.registry.find(h);
    if (!rec || !rec->online) w.greet(h);
  }
  w.channel->flush();
  w.render();
  return 0;
}
