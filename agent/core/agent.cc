// The Agent's entry points (agent/core/agent.h): construction and shutdown, message dispatch
// (handle), the hello, and the one way out to the coordinator (send, held while holding_).
// The order engine's jobs live in the files named for them: order_intake, order_fetch,
// order_job, order_revert, order_outcome, traffic_steps, start_first_order, signals, epochs,
// journal, recovery and loop.
#include "agent/core/agent.h"

#include "common/util/log.h"
#include "common/version.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

Agent::Agent(std::string host_id, std::map<std::string, std::string> labels,
             std::map<std::string, ServiceRuntime> services, StateStore& store, const Clock& clock, Send send,
             Verifier::Sleep sleep)
    : host_id_(std::move(host_id)),
      labels_(std::move(labels)),
      services_(std::move(services)),
      store_(store),
      clock_(clock),
      send_(std::move(send)),
      sleep_(std::move(sleep)) {}

Agent::~Agent() { shutdown(); }

void Agent::shutdown() { worker_.cancel_and_join(); }

void Agent::handle(const proto::Message& m) {
  if (auto* o = std::get_if<proto::Order>(&m))
    on_order(*o);
  else if (auto* c = std::get_if<proto::Chunk>(&m))
    on_chunk(proto::ChunkView{c->sha256, c->offset, c->total_size, c->data});
  else if (auto* e = std::get_if<proto::ErrorMsg>(&m))
    on_error(*e);
  else if (auto* s = std::get_if<proto::Signal>(&m))
    on_signal(*s);
  start_next();
}

void Agent::handle_chunk(const proto::ChunkView& c) {
  on_chunk(c);
  start_next();
}

bool Agent::working() const { return state_.active.has_value() || !state_.queue.empty(); }

proto::Hello Agent::hello() const {
  proto::Hello h;
  h.host_id = host_id_;
  h.agent_version = kGantryVersion;
  h.labels = labels_;
  for (const auto& [name, rt] : services_) {
    proto::ServiceStatus s;
    s.name = name;
    auto it = state_.services.find(name);
    if (it != state_.services.end()) {
      s.current_version = it->second.current;
      s.previous_version = it->second.previous;
    }
    s.state = "idle";
    if (state_.active && state_.active->order.service == name) {
      s.state = state_.active->phase == phase::kReverting ? "reverting" : "updating";
      s.order_id = state_.active->order.order_id;
    }
    h.services.push_back(std::move(s));
  }
  return h;
}

void Agent::send(const proto::Message& m) {
  if (holding_)
    held_.push_back(m);
  else
    send_(m);
}

void Agent::send_held() {
  holding_ = false;
  for (const auto& m : held_) send_(m);
  held_.clear();
}

std::string Agent::disk_version(const std::string& service) {
  auto it = services_.find(service);
  if (it == services_.end()) return {};
  auto v = it->second.driver->current_version();
  if (!v) {
    lg()->error("{}: {}", service, v.error().message);
    return state_.services[service].current;
  }
  return *v;
}

ServiceRuntime& Agent::svc_of(const proto::Order& o) { return services_.at(o.service); }

}  // namespace gantry::agent
