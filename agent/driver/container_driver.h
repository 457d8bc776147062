// The `container` driver: a release is an image (a `podman save` / `docker save` archive, or an
// image reference pinned by digest, shipped as a tiny JSON artifact) that runs as one container
// under the service's container name. The on-disk layout mirrors the binary driver so the engine's
// journal, crash recovery, verification and revert work unchanged:
//   <root>/downloads/<sha256>.part|.artifact   the artifact while / after downloading
//   <root>/releases/<version>/image.json       the installed image: its id, source and digest
//   <root>/current -> releases/<version>       what the service runs (rename(2)-swapped)
// The runtime CLI is configurable (`podman` or `docker`, same grammar); every call goes through
// the ProcessRunner so tests can script the runtime.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "agent/config/agent_config.h"
#include "agent/driver/driver.h"
#include "common/util/clock.h"
#include "common/util/process.h"
#include "common/util/shell_words.h"

namespace gantry::agent {

// The JSON artifact that names an image pinned by digest:
//   {"gantry_image_ref": 1, "image": "registry.example/app@sha256:<64 hex>"}
struct ImageRef {
  std::string image;   // the full reference, as given
  std::string digest;  // "sha256:<64 hex>", the part after '@'
};
// Parses and validates an image-ref artifact (no whitespace, no leading '-', pinned by digest).
Expected<ImageRef> parse_image_ref_artifact(const std::string& text);
// Validates a reference on its own ("registry/app@sha256:<hex>").
Expected<ImageRef> parse_pinned_image_ref(const std::string& ref);
// What an image archive holds: the image id (hex of the config digest) and the tags it carries.
struct ArchiveImage {
  std::string id;
  std::vector<std::string> tags;
};
// Reads the archive's manifest.json (docker-archive) or index.json + manifest blob (oci-archive).
// Refuses archives with more or fewer than one image.
Expected<ArchiveImage> read_archive_image(const std::string& archive_path);

class ContainerDriver final : public Driver {
 public:
  ContainerDriver(ServiceConfig cfg, ProcessRunner& runner, const Clock& clock);

  Expected<std::string> current_version() override;
  bool has_release(const ReleaseId& r) override;
  Status check_installable(const ReleaseId& r) override;
  std::string partial_artifact_path(const std::string& sha256) override;
  std::string artifact_path(const std::string& sha256) override;
  Status finish_download(const ReleaseId& r, const std::string& hashed_sha256 = "") override;
  // Loads the archive (or pulls the pinned reference), checks the image's digest, tags it
  // localhost/gantry/<container_name>:<version> and records it in releases/<version>/image.json.
  Status stage(const ReleaseId& r) override;
  Status switch_current(const std::string& version) override;
  Status sync_current() override;
  // Replaces the running container with one of `version`'s image: stop-first (stop + remove the
  // old container, run the new one under the name) or start-first (run the new one under a
  // temporary name, check it runs, stop + remove the old, rename). Idempotent, so a restarted
  // agent can simply call it again.
  Status restart(const std::string& version) override;
  // Removes image records (and the images, when no retained release and no container uses them)
  // beyond `retain`.
  Status prune(uint32_t retain, const std::set<std::string>& keep) override;
  Status cleanup() override;
  Status prune_downloads(const std::string& sha256, bool keep_complete) override;

  // The runtime command line for `args` (runtime, runtime_args, args), shell-quoted. Public for tests.
  std::string command(const std::vector<std::string>& args) const;
  // The `run` arguments for a container of `image_id` named `name`. Public for tests.
  std::vector<std::string> run_args(const std::string& name, const std::string& version,
                                    const std::string& image_id) const;
  // The name used for the new container while the old one still runs (start-first).
  std::string next_name() const { return cfg_.container_name + ".gantry-next"; }
  // Our tag for an installed release's image.
  std::string image_tag(const std::string& version) const;
  std::string release_dir(const std::string& version) const { return cfg_.root + "/releases/" + version; }

 private:
  struct Installed {
    std::string sha256;
    std::string image_id;
    std::string image;              // pinned reference, or "" for an archive
    std::vector<std::string> tags;  // tags the archive brought (removed with the release)
    int64_t installed_at = 0;
  };
  struct RunResult {
    int exit_code = -1;
    std::string output;
  };

  std::optional<Installed> read_installed(const std::string& version) const;
  // Runs one runtime command; an Error (with the runtime's own message) unless it exits 0.
  Expected<std::string> rt(const std::vector<std::string>& args, Millis timeout_ms, const std::string& what);
  // Runs one runtime command and returns its exit code and output; Error only if it could not run.
  Expected<RunResult> rt_raw(const std::vector<std::string>& args, Millis timeout_ms);
  // The runtime's id of image `ref` ("" when the runtime does not know it).
  Expected<std::string> image_id_of(const std::string& ref);
  // Whether a container named `name` exists (in any state).
  Expected<bool> container_exists(const std::string& name);
  Status remove_container(const std::string& name);
  Status run_container(const std::string& name, const std::string& version, const std::string& image_id);

  ServiceConfig cfg_;
  ProcessRunner& runner_;
  const Clock& clock_;
};

}  // namespace gantry::agent
