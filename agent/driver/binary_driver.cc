#include "agent/driver/binary_driver.h"

#include "agent/driver/install_root.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>

#include "agent/release/tar_extract.h"
#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/util/names.h"
#include "common/util/sha256.h"
#include "common/util/text.h"

namespace gantry::agent {
namespace {

constexpr const char* kMarker = ".gantry-release";

struct Marker {
  std::string sha256;
  int64_t installed_at = 0;
};

std::optional<Marker> read_marker(const std::string& dir) {
  auto text = fs::read_file(dir + "/" + kMarker, 64 * 1024);
  if (!text) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(*text);
    return Marker{j.at("sha256").get<std::string>(), j.value("installed_at", int64_t{0})};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string random_suffix() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

std::string tail(const std::string& s, size_t n) {
  std::string t = s.size() > n ? s.substr(s.size() - n) : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return safe_text(t);  // a command's output: outside text, made safe where it enters
}

}  // namespace

BinaryDriver::BinaryDriver(ServiceConfig cfg, ProcessRunner& runner, const Clock& clock)
    : cfg_(std::move(cfg)), runner_(runner), clock_(clock) {}

Expected<std::string> BinaryDriver::current_version() { return read_current_version(cfg_.root); }

bool BinaryDriver::has_release(const ReleaseId& r) {
  auto m = read_marker(release_dir(r.version));
  return m && m->sha256 == r.sha256;
}

Status BinaryDriver::check_installable(const ReleaseId& r) {
  std::string dir = release_dir(r.version);
  if (!fs::exists(dir)) return Status::Ok();
  auto m = read_marker(dir);
  if (m && m->sha256 == r.sha256) return Status::Ok();
  if (m) return make_error("conflict", "version " + r.version + " already installed with another digest");
  // No valid marker: not something we installed completely. Remove it unless it runs.
  auto cur = current_version();
  if (cur && *cur == r.version)
    return make_error("conflict", "version " + r.version + " is current but has no valid " + kMarker);
  log::get("agent.driver")->warn("removing incomplete release dir {}", dir);
  return fs::remove_all(dir);
}

std::string BinaryDriver::partial_artifact_path(const std::string& sha256) {
  return cfg_.root + "/downloads/" + sha256 + ".part";
}

Status BinaryDriver::prune_downloads(const std::string& sha256, bool keep_complete) {
  std::vector<std::string> keep = {sha256 + ".part"};
  if (keep_complete) keep.push_back(sha256 + ".tar");
  return prune_downloads_except(cfg_.root, keep);
}

std::string BinaryDriver::artifact_path(const std::string& sha256) {
  return cfg_.root + "/downloads/" + sha256 + ".tar";
}

Status BinaryDriver::finish_download(const ReleaseId& r, const std::string& hashed_sha256) {
  return verify_and_commit_download(r, partial_artifact_path(r.sha256), artifact_path(r.sha256), hashed_sha256);
}

Status BinaryDriver::stage(const ReleaseId& r) {
  auto lg = log::get("agent.driver");
  std::string staging = cfg_.root + "/staging";
  std::string releases = cfg_.root + "/releases";
  if (Status st = fs::make_dirs(staging); !st.ok()) return st;
  if (Status st = fs::make_dirs(releases); !st.ok()) return st;
  if (Status st = check_installable(r); !st.ok()) return st;
  std::string tmp = staging + "/" + r.version + "." + random_suffix();
  if (::mkdir(tmp.c_str(), 0755) != 0) return make_error("io", "mkdir " + tmp + ": " + std::strerror(errno));
  auto fail = [&](Error e) -> Status {
    (void)fs::remove_all(tmp);
    return e;
  };
  TarLimits lim;
  auto stats = extract_tar_file(artifact_path(r.sha256), tmp, lim);
  if (!stats) return fail(make_error(stats.error().code, "cannot extract release: " + stats.error().message));
  nlohmann::json marker = {{"service", r.service},
                           {"version", r.version},
                           {"sha256", r.sha256},
                           {"size", r.size},
                           {"installed_at", clock_.wall_ms()}};
  if (Status st = fs::write_file_atomic(tmp + "/" + kMarker, marker.dump(2) + "\n", 0644); !st.ok())
    return fail(st.error());
  if (Status st = fs::fsync_dir(tmp); !st.ok()) return fail(st.error());
  std::string dest = release_dir(r.version);
  if (::rename(tmp.c_str(), dest.c_str()) != 0) {
    int e = errno;
    if ((e == EEXIST || e == ENOTEMPTY) && has_release(r)) {
      (void)fs::remove_all(tmp);
      return Status::Ok();
    }
    return fail(make_error("io", "rename " + tmp + " -> " + dest + ": " + std::strerror(e)));
  }
  if (Status st = fs::fsync_dir(releases); !st.ok()) return st;
  (void)fs::fsync_dir(staging);
  lg->info("installed {} {} ({} files, {} bytes)", r.service, r.version, stats->files, stats->bytes);
  // The release dir is now the installed copy; the artifact is no longer needed.
  (void)fs::remove_all(artifact_path(r.sha256));
  return Status::Ok();
}

Status BinaryDriver::switch_current(const std::string& version) {
  std::string dir = release_dir(version);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error("not_found", "release " + version + " is not installed");
  return fs::replace_symlink(cfg_.root + "/current", "releases/" + version, /*sync_dir=*/false);
}

Status BinaryDriver::sync_current() { return fs::fsync_dir(cfg_.root); }

std::map<std::string, std::string> BinaryDriver::restart_env(const std::string& version) const {
  return {{"GANTRY_SERVICE", cfg_.name},
          {"GANTRY_ROOT", cfg_.root},
          {"GANTRY_VERSION", version},
          {"GANTRY_RELEASE_DIR", cfg_.root + "/current"}};
}

Status BinaryDriver::command_outcome(const std::string& what, Millis timeout_ms, const Expected<ProcessResult>& r) {
  if (!r) return make_error("restart", what + " could not run: " + r.error().message);
  if (r->timed_out) return make_error("restart", what + " timed out after " + std::to_string(timeout_ms) + " ms");
  if (r->exit_code != 0) {
    std::string out = tail(r->output, 300);
    return make_error("restart",
                      what + " exited with " + std::to_string(r->exit_code) + (out.empty() ? "" : ": " + out));
  }
  return Status::Ok();
}

Status BinaryDriver::restart_outcome(const Expected<ProcessResult>& r) const {
  return command_outcome("restart command", cfg_.restart_timeout_ms, r);
}

// ---------------------------------------------------------------------------------------------
// Slots (start_order = start-first)

Expected<const Slot*> BinaryDriver::find_slot(const std::string& name) const {
  for (const auto& s : cfg_.slots)
    if (s.name == name) return &s;
  return make_error("not_found", "service " + cfg_.name + " has no slot '" + name + "'");
}

Expected<std::string> BinaryDriver::slot_version(const std::string& name) {
  auto slot = find_slot(name);
  if (!slot) return slot.error();
  auto target = fs::read_symlink(slot_link(name));
  if (!target) {
    if (target.error().code == "not_found") return std::string();
    return target.error();
  }
  const std::string prefix = "../releases/";
  if (target->rfind(prefix, 0) == 0 && is_safe_name(target->substr(prefix.size())))
    return target->substr(prefix.size());
  return make_error("corrupt", slot_link(name) + " points at '" + *target + "', not at a release");
}

Expected<std::string> BinaryDriver::live_slot() {
  auto cur = current_version();
  if (!cur) return cur.error();
  std::vector<SlotLink> links;
  for (const auto& s : cfg_.slots) {
    SlotLink l;
    auto v = slot_version(s.name);
    if (v) l.version = *v;  // a corrupt link names no release: not the live one
    struct stat st {};
    if (!l.version.empty() && ::lstat(slot_link(s.name).c_str(), &st) == 0)
      l.made_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    links.push_back(l);
  }
  return choose_live_slot(cfg_.slots, links, *cur);
}

Status BinaryDriver::link_slot(const std::string& name, const std::string& version) {
  if (auto slot = find_slot(name); !slot) return slot.error();
  struct stat st {};
  if (::stat(release_dir(version).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error("not_found", "release " + version + " is not installed");
  if (Status s = fs::make_dirs(cfg_.root + "/slots"); !s.ok()) return s;
  return fs::replace_symlink(slot_link(name), "../releases/" + version, /*sync_dir=*/true);
}

Status BinaryDriver::unlink_slot(const std::string& name) {
  if (auto slot = find_slot(name); !slot) return slot.error();
  if (::unlink(slot_link(name).c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return make_error("io", "unlink " + slot_link(name) + ": " + std::strerror(errno));
  }
  return fs::fsync_dir(cfg_.root + "/slots");
}

Status BinaryDriver::start_slot(const std::string& name, const std::string& version) {
  auto slot = find_slot(name);
  if (!slot) return slot.error();
  auto env = restart_env(version);
  env["GANTRY_SLOT"] = name;
  env["GANTRY_SLOT_PORT"] = std::to_string((*slot)->port);
  env["GANTRY_RELEASE_DIR"] = slot_link(name);
  return command_outcome("start command (slot " + name + ")", cfg_.start_timeout_ms,
                         runner_.run_shell(cfg_.start_command, env, cfg_.start_timeout_ms));
}

Status BinaryDriver::stop_slot(const std::string& name, const std::string& version) {
  auto slot = find_slot(name);
  if (!slot) return slot.error();
  auto env = restart_env(version);
  env["GANTRY_SLOT"] = name;
  env["GANTRY_SLOT_PORT"] = std::to_string((*slot)->port);
  env["GANTRY_RELEASE_DIR"] = slot_link(name);
  return command_outcome("stop command (slot " + name + ")", cfg_.stop_timeout_ms,
                         runner_.run_shell(cfg_.stop_command, env, cfg_.stop_timeout_ms));
}

Status BinaryDriver::restart(const std::string& version) {
  return restart_outcome(runner_.run_shell(cfg_.restart_command, restart_env(version), cfg_.restart_timeout_ms));
}

// The restart command's shell, started up while the agent journals the order and swaps.
class PreparedRestartCommand final : public PreparedRestart {
 public:
  PreparedRestartCommand(const BinaryDriver& driver, std::unique_ptr<PreparedShell> shell)
      : driver_(driver), shell_(std::move(shell)) {}
  void start() override { shell_->start(); }
  Status finish() override { return driver_.restart_outcome(shell_->wait()); }

 private:
  const BinaryDriver& driver_;
  std::unique_ptr<PreparedShell> shell_;
};

std::unique_ptr<PreparedRestart> BinaryDriver::prepare_restart(const std::string& version) {
  return std::make_unique<PreparedRestartCommand>(
      *this, runner_.prepare_shell(cfg_.restart_command, restart_env(version), cfg_.restart_timeout_ms));
}

Status BinaryDriver::prune(uint32_t retain, const std::set<std::string>& keep) {
  std::string releases = cfg_.root + "/releases";
  std::error_code ec;
  std::vector<std::pair<int64_t, std::string>> found;
  for (const auto& e : std::filesystem::directory_iterator(releases, ec)) {
    std::string v = e.path().filename().string();
    if (!is_safe_name(v) || !e.is_directory(ec) || e.is_symlink(ec)) continue;
    auto m = read_marker(e.path().string());
    found.emplace_back(m ? m->installed_at : 0, v);
  }
  if (ec) return make_error("io", "list " + releases + ": " + ec.message());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  Status result;
  bool removed = false;
  std::set<std::string> linked;  // a slot's release runs (start-first): never pruned
  for (const auto& sl : cfg_.slots)
    if (auto v = slot_version(sl.name); v && !v->empty()) linked.insert(*v);
  for (size_t i = retain; i < found.size(); ++i) {
    if (keep.count(found[i].second) || linked.count(found[i].second)) continue;
    log::get("agent.driver")->info("pruning release {} of {}", found[i].second, cfg_.name);
    if (Status st = fs::remove_all(releases + "/" + found[i].second); !st.ok()) result = st;
    removed = true;
  }
  if (removed) (void)fs::fsync_dir(releases);  // nothing removed: nothing to make durable
  return result;
}

Status BinaryDriver::cleanup() {
  std::error_code ec;
  std::string staging = cfg_.root + "/staging";
  for (const auto& e : std::filesystem::directory_iterator(staging, ec)) {
    log::get("agent.driver")->info("removing interrupted staging dir {}", e.path().string());
    (void)fs::remove_all(e.path().string());
  }
  for (const auto& e : std::filesystem::directory_iterator(cfg_.root, ec)) {
    if (e.path().filename().string().rfind("current.tmp.", 0) == 0) (void)fs::remove_all(e.path().string());
  }
  for (const auto& e : std::filesystem::directory_iterator(cfg_.root + "/slots", ec)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) (void)fs::remove_all(e.path().string());
  }
  return fs::make_dirs(cfg_.root + "/downloads");
}

}  // namespace gantry::agent
