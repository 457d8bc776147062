#include "agent/driver/driver.h"

namespace gantry::agent {
namespace {

// The default: nothing ahead of start(); the whole restart() runs in finish().
class DeferredRestart final : public PreparedRestart {
 public:
  DeferredRestart(Driver& driver, std::string version) : driver_(driver), version_(std::move(version)) {}
  void start() override {}
  Status finish() override { return driver_.restart(version_); }

 private:
  Driver& driver_;
  std::string version_;
};

}  // namespace

std::unique_ptr<PreparedRestart> Driver::prepare_restart(const std::string& version) {
  return std::make_unique<DeferredRestart>(*this, version);
}

}  // namespace gantry::agent
