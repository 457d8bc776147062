// The `binary` driver: `<root>/releases/<version>` dirs, `<root>/current` symlink,
// `<root>/staging` for extraction, `<root>/downloads` for artifacts; with start_order =
// start-first also `<root>/slots/<name> -> ../releases/<version>` per slot (agent/driver/slots.h).
#pragma once

#include <map>

#include "agent/config/agent_config.h"
#include "agent/driver/driver.h"
#include "agent/driver/slots.h"
#include "common/util/clock.h"
#include "common/util/process.h"

namespace gantry::agent {

class BinaryDriver final : public Driver, public SlotDriver {
 public:
  BinaryDriver(ServiceConfig cfg, ProcessRunner& runner, const Clock& clock);

  Expected<std::string> current_version() override;
  bool has_release(const ReleaseId& r) override;
  Status check_installable(const ReleaseId& r) override;
  std::string partial_artifact_path(const std::string& sha256) override;
  std::string artifact_path(const std::string& sha256) override;
  Status finish_download(const ReleaseId& r, const std::string& hashed_sha256 = "") override;
  Status stage(const ReleaseId& r) override;
  Status switch_current(const std::string& version) override;
  Status sync_current() override;
  Status restart(const std::string& version) override;
  std::unique_ptr<PreparedRestart> prepare_restart(const std::string& version) override;
  Status prune(uint32_t retain, const std::set<std::string>& keep) override;
  Status cleanup() override;
  Status prune_downloads(const std::string& sha256, bool keep_complete) override;

  // SlotDriver (start_order = start-first).
  const std::vector<Slot>& slots() const override { return cfg_.slots; }
  Expected<std::string> live_slot() override;
  Expected<std::string> slot_version(const std::string& name) override;
  Status link_slot(const std::string& name, const std::string& version) override;
  Status unlink_slot(const std::string& name) override;
  Status start_slot(const std::string& name, const std::string& version) override;
  Status stop_slot(const std::string& name, const std::string& version) override;

  std::string release_dir(const std::string& version) const { return cfg_.root + "/releases/" + version; }
  std::string slot_link(const std::string& name) const { return cfg_.root + "/slots/" + name; }

 private:
  friend class PreparedRestartCommand;
  std::map<std::string, std::string> restart_env(const std::string& version) const;
  Status restart_outcome(const Expected<ProcessResult>& r) const;
  // A command's result as a Status: `what` ("restart command") names it in the error.
  static Status command_outcome(const std::string& what, Millis timeout_ms, const Expected<ProcessResult>& r);
  Expected<const Slot*> find_slot(const std::string& name) const;

  ServiceConfig cfg_;
  ProcessRunner& runner_;
  const Clock& clock_;
};

}  // namespace gantry::agent
