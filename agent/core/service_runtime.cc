#include "agent/core/service_runtime.h"

#include "agent/driver/binary_driver.h"
#include "agent/driver/container_driver.h"

namespace gantry::agent {
namespace {

Expected<std::shared_ptr<traffic::Lifecycle>> make_lifecycle(const traffic::LifecycleSettings& s, ProcessRunner& runner,
                                                             const Clock& clock,
                                                             const std::function<void(Millis)>& sleep) {
  if (!s.any()) return std::shared_ptr<traffic::Lifecycle>();
  auto lb = traffic::make_load_balancer(s.haproxy);
  if (!lb) return lb.error();
  return std::make_shared<traffic::Lifecycle>(s, runner, *lb, clock, sleep);
}

}  // namespace

ProbeList make_probes(const ServiceConfig& cfg, const Slot* slot) {
  auto fill = [&](const std::string& t) { return slot ? with_slot(t, *slot) : t; };
  ProbeList out;
  for (const auto& url : cfg.http_probes) out.push_back(std::make_shared<HttpProbe>(fill(url), cfg.http_probe_expect));
  for (const auto& hp : cfg.tcp_probes) out.push_back(std::make_shared<TcpProbe>(fill(hp)));
  return out;
}

Expected<ServiceRuntime> make_service_runtime(const ServiceConfig& cfg, ProcessRunner& runner, const Clock& clock,
                                              std::function<void(Millis)> sleep) {
  ServiceRuntime rt;
  rt.config = cfg;
  if (cfg.driver == "container") {
    rt.driver = std::make_shared<ContainerDriver>(cfg, runner, clock);
  } else {
    auto d = std::make_shared<BinaryDriver>(cfg, runner, clock);
    rt.driver = d;
    if (cfg.start_order == "start-first") rt.slot_driver = d;
  }
  if (!rt.start_first()) {
    rt.probes = make_probes(cfg);
    auto lc = make_lifecycle(cfg.traffic, runner, clock, sleep);
    if (!lc) return lc.error();
    rt.lifecycle = *lc;
    return rt;
  }
  for (const auto& slot : cfg.slots) {
    rt.slot_probes[slot.name] = make_probes(cfg, &slot);
    traffic::LifecycleSettings s = cfg.traffic;
    s.haproxy.backend = with_slot(s.haproxy.backend, slot);
    s.haproxy.server = with_slot(s.haproxy.server, slot);
    auto lc = make_lifecycle(s, runner, clock, sleep);
    if (!lc) return lc.error();
    rt.slot_lifecycles[slot.name] = *lc;
  }
  return rt;
}

}  // namespace gantry::agent
