// What the engine needs to manage one service, built from its config: the driver, the probes,
// the traffic steps and, for a start-first binary service, the same per slot.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "agent/config/agent_config.h"
#include "agent/driver/driver.h"
#include "agent/driver/slots.h"
#include "agent/probe/probe.h"
#include "agent/traffic/lifecycle.h"
#include "common/util/clock.h"
#include "common/util/process.h"

namespace gantry::agent {

struct ServiceRuntime {
  ServiceConfig config;
  std::shared_ptr<Driver> driver;
  ProbeList probes;
  // The traffic steps around its swaps; null: none (the swap and restart run without them).
  // Null for a start-first binary service, whose steps are per slot.
  std::shared_ptr<traffic::Lifecycle> lifecycle;
  // start_order = start-first, driver = binary (agent/core/start_first.h): the driver's slots,
  // and per slot name its probes and traffic steps ({slot} and {port} filled in; null: none).
  std::shared_ptr<SlotDriver> slot_driver;
  std::map<std::string, ProbeList> slot_probes;
  std::map<std::string, std::shared_ptr<traffic::Lifecycle>> slot_lifecycles;

  bool start_first() const { return slot_driver != nullptr; }
};

// The probes `cfg` names, with `slot`'s name and port filled in when given.
ProbeList make_probes(const ServiceConfig& cfg, const Slot* slot = nullptr);

// Builds a service's runtime: the binary or container driver, probes, traffic steps (an invalid
// HAProxy endpoint or name is an error). `sleep` is what the traffic steps wait with.
Expected<ServiceRuntime> make_service_runtime(const ServiceConfig& cfg, ProcessRunner& runner, const Clock& clock,
                                              std::function<void(Millis)> sleep);

}  // namespace gantry::agent
