// The `binary` driver: `<root>/releases/<version>` dirs, `<root>/current` symlink,
// `<root>/staging` for extraction, `<root>/downloads` for artifacts.
#pragma once

#include <map>

#include "agent/config/agent_config.h"
#include "agent/driver/driver.h"
#include "common/util/clock.h"
#include "common/util/process.h"

namespace gantry::agent {

class BinaryDriver final : public Driver {
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

  std::string release_dir(const std::string& version) const { return cfg_.root + "/releases/" + version; }

 private:
  friend class PreparedRestartCommand;
  std::map<std::string, std::string> restart_env(const std::string& version) const;
  Status restart_outcome(const Expected<ProcessResult>& r) const;

  ServiceConfig cfg_;
  ProcessRunner& runner_;
  const Clock& clock_;
};

}  // namespace gantry::agent
