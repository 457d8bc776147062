#include "coordinator/server/convergence.h"

#include <algorithm>

#include "common/util/log.h"
#include "coordinator/rollout/planner.h"
#include "coordinator/server/desired_state.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
spdlog::logger* LR() {
  static const auto l = log::get("rollout");
  return l.get();
}
}  // namespace

std::vector<Drift> find_drift(const store::DesiredRow& d, const fleet::Registry& registry) {
  std::vector<Drift> out;
  auto sel = rollout::parse_selector(d.selector);
  if (!sel) return out;
  for (const auto& [id, h] : registry.hosts()) {  // a std::map: sorted by host id
    // What a host runs is what its agent said to this coordinator: a host restored from the
    // store at start (online for its grace period) carries the versions of its last Hello to
    // whichever coordinator ran then, stale after any rollout since (a standby that just took
    // over would "repair" hosts already on the desired version).
    if (!h.online || !h.said_hello) continue;
    auto svc = h.services.find(d.service);
    if (svc == h.services.end()) continue;
    if (svc->second.state != "idle" || !svc->second.order_id.empty()) continue;
    if (!rollout::selector_matches(*sel, h.labels)) continue;
    if (svc->second.current_version == d.version) continue;
    out.push_back({id, d.service, svc->second.current_version, d.version});
  }
  return out;
}

Convergence::Convergence(RolloutExecutor& executor, store::Store& store, const fleet::Registry& registry,
                         const Clock& clock)
    : executor_(executor), store_(store), registry_(registry), clock_(clock) {}

void Convergence::tick() {
  const Millis now = clock_.now_ms();
  if (looked_ && now - last_look_ < kEveryMs) return;
  looked_ = true;
  last_look_ = now;
  note_ended_repairs();
  look();
}

void Convergence::note_ended_repairs() {
  for (auto it = repairs_.begin(); it != repairs_.end();) {
    const auto& [id, service] = *it;
    if (executor_.find(id)) {
      ++it;
      continue;
    }
    if (const rollout::State* st = executor_.ended(service); st && st->id == id) {
      for (const auto& h : st->hosts) {
        if (h.state == rollout::HostState::kHealthy) continue;
        auto rec = registry_.hosts().find(h.host_id);
        failed_on_[{service, h.host_id}] = rec == registry_.hosts().end() ? 0 : rec->second.hellos;
      }
    }
    it = repairs_.erase(it);
  }
}

void Convergence::look() {
  by_host_.clear();
  const Millis wall = clock_.wall_ms();
  for (const auto& [service, d] : executor_.desired()) {
    if (executor_.busy(service)) continue;  // a rollout of it is changing the hosts right now
    std::vector<Drift> drift = find_drift(d, registry_);
    std::vector<rollout::HostCandidate> repair;
    std::string why;
    for (const auto& x : drift) {
      by_host_[x.host_id].push_back(x);
      const auto& rec = registry_.hosts().at(x.host_id);
      auto failed = failed_on_.find({service, x.host_id});
      if (failed != failed_on_.end() && failed->second == rec.hellos) continue;  // no Hello since: not again
      if (failed != failed_on_.end()) failed_on_.erase(failed);
      const bool repairs = d.converge == "auto" && !d.held;
      const std::string key = service + '\n' + x.host_id + '\n' + x.running + '\n' + x.desired;
      if (!repairs) {
        if (reported_.insert(key).second) {
          const std::string msg = x.host_id + " drifted: it runs " + (x.running.empty() ? "nothing" : x.running) +
                                  ", desired " + x.desired + " (" +
                                  (d.held ? "held after rollout " + std::to_string(d.rollout_id) : "converge: report") +
                                  "; not repaired)";
          LR()->warn("{}: {}", service, msg);
          if (auto s = store_.add_event({0, d.rollout_id, wall, msg}); !s.ok())
            L()->error("cannot record drift of {}: {}", x.host_id, s.error().message);
        }
        continue;
      }
      repair.push_back({x.host_id, rec.labels, x.running, true});
      if (repair.size() <= 3)
        why += (why.empty() ? "" : ", ") + x.host_id + " runs " + (x.running.empty() ? "nothing" : x.running);
    }
    if (repair.empty()) continue;
    if (repair.size() > 3) why += " and " + std::to_string(repair.size() - 3) + " more";
    RolloutExecutor::StartRequest req;
    req.service = service;
    req.version = d.version;
    req.kind = "converge";
    req.plan = convergence_plan(d.plan);
    req.hosts = std::move(repair);
    req.selector = d.selector;
    req.who = "gantry (converge)";
    req.reason = "drift from the desired " + d.version + ": " + why;
    auto id = executor_.start(std::move(req));
    if (id) {
      repairs_[*id] = service;
      LR()->info("{}: converging drifted hosts to {} with rollout {} ({})", service, d.version, *id, why);
    } else {
      auto& at = start_error_logged_[service];
      if (at == 0 || clock_.now_ms() - at >= 60'000) {
        at = clock_.now_ms();
        L()->error("{}: cannot converge drifted hosts to {}: {}", service, d.version, id.error().message);
      }
    }
  }
}

bool Convergence::still(const Drift& x) const {
  if (executor_.busy(x.service)) return false;
  auto h = registry_.hosts().find(x.host_id);
  if (h == registry_.hosts().end() || !h->second.online) return false;
  auto svc = h->second.services.find(x.service);
  return svc != h->second.services.end() && svc->second.current_version == x.running;
}

std::map<std::string, size_t> Convergence::counts() const {
  std::map<std::string, size_t> n;
  for (const auto& [service, d] : executor_.desired()) n[service] = 0;
  for (const auto& [host, drift] : by_host_)
    for (const auto& x : drift) n[x.service] += still(x);
  return n;
}

void Convergence::annotate(nlohmann::json& hosts) const {
  if (!hosts.is_array()) return;
  for (auto& h : hosts) {
    if (!h.is_object() || !h.contains("host_id") || !h["host_id"].is_string()) continue;
    auto it = by_host_.find(h["host_id"].get<std::string>());
    nlohmann::json list = nlohmann::json::array();
    if (it != by_host_.end()) {
      for (const auto& x : it->second) {
        if (!still(x)) continue;
        if (list.empty()) h["desired"] = x.desired;
        list.push_back({{"service", x.service}, {"running", x.running}, {"desired", x.desired}});
      }
    }
    h["drift"] = !list.empty();
    if (!list.empty()) h["drift_services"] = std::move(list);
  }
}

nlohmann::json Convergence::desired_json() const {
  const auto n = counts();
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [service, d] : executor_.desired()) {
    auto c = n.find(service);
    out.push_back({{"service", service},
                   {"version", d.version},
                   {"selector", d.selector},
                   {"converge", d.converge},
                   {"held", d.held},
                   {"rollout_id", d.rollout_id},
                   {"note", d.note},
                   {"updated_at", d.updated_at},
                   {"drifted_hosts", c == n.end() ? 0 : c->second}});
  }
  return out;
}

}  // namespace gantry::coordinator
