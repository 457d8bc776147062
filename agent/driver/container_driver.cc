#include "agent/driver/container_driver.h"

#include "agent/driver/install_root.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "agent/core/fault.h"
#include "common/util/fs.h"
#include "common/util/log.h"
#include "common/util/names.h"
#include "common/util/sha256.h"
#include "common/util/text.h"

namespace gantry::agent {
namespace {

constexpr const char* kMarker = "image.json";
constexpr uint64_t kMaxJsonMember = 4 * 1024 * 1024;
constexpr Millis kInspectTimeoutMs = 60000;

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.container"); }

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string tail(const std::string& s, size_t n) {
  std::string t = trim(s);
  // The runtime's output: outside text, made safe where it enters.
  return safe_text(t.size() > n ? "..." + t.substr(t.size() - n) : t);
}

std::string strip_sha256(std::string id) {
  id = trim(id);
  if (id.rfind("sha256:", 0) == 0) id = id.substr(7);
  return id;
}

// Members of an uncompressed tar, read without extracting: only small JSON files are needed.
class TarReader {
 public:
  explicit TarReader(const std::string& path) : in_(path, std::ios::binary) {}
  bool open() const { return static_cast<bool>(in_); }

  // Reads the members whose (normalised) names `want` accepts, up to kMaxJsonMember each.
  Expected<std::map<std::string, std::string>> read(const std::function<bool(const std::string&)>& want) {
    std::map<std::string, std::string> out;
    in_.clear();
    in_.seekg(0);
    std::string long_name;
    char h[512];
    for (;;) {
      if (!in_.read(h, 512)) return make_error("format", "truncated tar header");
      bool zero = std::all_of(h, h + 512, [](char c) { return c == 0; });
      if (zero) break;
      std::string name(h, strnlen(h, 100));
      if (std::memcmp(h + 257, "ustar", 5) == 0 && h[345] != 0)
        name = std::string(h + 345, strnlen(h + 345, 155)) + "/" + name;
      uint64_t size = 0;
      for (int i = 124; i < 136 && h[i]; ++i) {
        if (h[i] == ' ') continue;
        if (h[i] < '0' || h[i] > '7') return make_error("format", "bad tar size field");
        size = size * 8 + static_cast<uint64_t>(h[i] - '0');
      }
      char type = h[156];
      uint64_t padded = (size + 511) / 512 * 512;
      if (type == 'L') {  // GNU long name for the next member
        if (size > 65536) return make_error("format", "tar long name too long");
        std::string buf(padded, '\0');
        if (!in_.read(buf.data(), static_cast<std::streamsize>(padded))) return make_error("format", "truncated tar");
        long_name = std::string(buf.c_str(), strnlen(buf.c_str(), size));
        continue;
      }
      if (!long_name.empty()) name = std::move(long_name);
      long_name.clear();
      while (name.rfind("./", 0) == 0) name = name.substr(2);
      if ((type == '0' || type == 0) && want(name)) {
        if (size > kMaxJsonMember) return make_error("format", name + " in the archive is too large");
        std::string buf(padded, '\0');
        if (!in_.read(buf.data(), static_cast<std::streamsize>(padded))) return make_error("format", "truncated tar");
        buf.resize(size);
        out[name] = std::move(buf);
      } else {
        in_.seekg(static_cast<std::streamoff>(padded), std::ios::cur);
        if (!in_) return make_error("format", "truncated tar");
      }
    }
    return out;
  }

 private:
  std::ifstream in_;
};

bool is_hex64(const std::string& s) { return is_sha256_hex(s); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Artifacts

Expected<ImageRef> parse_pinned_image_ref(const std::string& ref) {
  auto bad = [&](const std::string& why) { return make_error("invalid", "image reference '" + ref + "' " + why); };
  if (ref.empty() || ref.size() > 1024) return bad("is empty or too long");
  if (ref[0] == '-') return bad("starts with '-'");
  for (char c : ref)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '/' || c == ':' ||
          c == '@'))
      return bad("holds a character outside [A-Za-z0-9._/:@-]");
  auto at = ref.find('@');
  if (at == std::string::npos || at == 0 || ref.find('@', at + 1) != std::string::npos)
    return bad("is not pinned by digest (name@sha256:<64 hex>)");
  std::string digest = ref.substr(at + 1);
  if (digest.rfind("sha256:", 0) != 0 || !is_hex64(digest.substr(7))) return bad("is not pinned by a sha256 digest");
  return ImageRef{ref, digest};
}

Expected<ImageRef> parse_image_ref_artifact(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return make_error("invalid", std::string("image reference artifact is not JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("gantry_image_ref") || j["gantry_image_ref"] != 1 || !j.contains("image") ||
      !j["image"].is_string())
    return make_error("invalid",
                      "image reference artifact must be {\"gantry_image_ref\": 1, \"image\": \"name@sha256:...\"}");
  return parse_pinned_image_ref(j["image"].get<std::string>());
}

Expected<ArchiveImage> read_archive_image(const std::string& archive_path) {
  TarReader tar(archive_path);
  if (!tar.open()) return make_error("io", "cannot open " + archive_path);
  auto top = tar.read([](const std::string& n) { return n == "manifest.json" || n == "index.json"; });
  if (!top) return make_error(top.error().code, "not an image archive: " + top.error().message);
  ArchiveImage out;
  try {
    if (top->count("manifest.json")) {  // docker-archive (podman save's default, docker save)
      auto m = nlohmann::json::parse(top->at("manifest.json"));
      if (!m.is_array() || m.size() != 1)
        return make_error("format", "image archive must hold exactly one image, manifest.json lists " +
                                        std::to_string(m.is_array() ? m.size() : 0));
      std::string config = m[0].at("Config").get<std::string>();
      std::string base = config.substr(config.find_last_of('/') + 1);
      if (base.size() > 5 && base.substr(base.size() - 5) == ".json") base.resize(base.size() - 5);
      if (!is_hex64(base)) return make_error("format", "manifest.json names config '" + config + "', not a sha256");
      out.id = base;
      if (m[0].contains("RepoTags") && m[0]["RepoTags"].is_array())
        for (const auto& t : m[0]["RepoTags"])
          if (t.is_string()) out.tags.push_back(t.get<std::string>());
      return out;
    }
    if (top->count("index.json")) {  // oci-archive
      auto idx = nlohmann::json::parse(top->at("index.json"));
      const auto& ms = idx.at("manifests");
      if (!ms.is_array() || ms.size() != 1)
        return make_error("format", "image archive must hold exactly one image (index.json)");
      std::string d = strip_sha256(ms[0].at("digest").get<std::string>());
      if (!is_hex64(d)) return make_error("format", "index.json names a manifest that is not a sha256");
      auto blob = tar.read([&](const std::string& n) { return n == "blobs/sha256/" + d; });
      if (!blob) return blob.error();
      if (blob->empty()) return make_error("format", "oci archive lacks the manifest blob " + d);
      auto man = nlohmann::json::parse(blob->begin()->second);
      std::string cfg = strip_sha256(man.at("config").at("digest").get<std::string>());
      if (!is_hex64(cfg)) return make_error("format", "oci manifest names a config that is not a sha256");
      out.id = cfg;
      if (ms[0].contains("annotations") && ms[0]["annotations"].contains("org.opencontainers.image.ref.name"))
        out.tags.push_back(ms[0]["annotations"]["org.opencontainers.image.ref.name"].get<std::string>());
      return out;
    }
  } catch (const std::exception& e) {
    return make_error("format", std::string("image archive manifest is malformed: ") + e.what());
  }
  return make_error("format", "not an image archive: no manifest.json or index.json");
}

// ---------------------------------------------------------------------------------------------
// Driver

ContainerDriver::ContainerDriver(ServiceConfig cfg, ProcessRunner& runner, const Clock& clock)
    : cfg_(std::move(cfg)), runner_(runner), clock_(clock) {
  if (cfg_.container_name.empty()) cfg_.container_name = cfg_.name;
}

std::string ContainerDriver::command(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {cfg_.runtime};
  argv.insert(argv.end(), cfg_.runtime_args.begin(), cfg_.runtime_args.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return shell_join(argv);
}

std::vector<std::string> ContainerDriver::run_args(const std::string& name, const std::string& version,
                                                   const std::string& image_id) const {
  std::vector<std::string> a = {
      "run", "-d", "--name", name, "--label", "gantry.service=" + cfg_.name, "--label", "gantry.version=" + version};
  a.insert(a.end(), cfg_.run_args.begin(), cfg_.run_args.end());
  a.push_back(image_id);
  a.insert(a.end(), cfg_.command.begin(), cfg_.command.end());
  return a;
}

std::string ContainerDriver::image_tag(const std::string& version) const {
  std::string repo = cfg_.container_name;
  for (auto& c : repo) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string tag = version;
  for (auto& c : tag)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) c = '_';
  if (!tag.empty() && (tag[0] == '.' || tag[0] == '-')) tag = "_" + tag.substr(1);
  return "localhost/gantry/" + repo + ":" + tag;
}

Expected<ContainerDriver::RunResult> ContainerDriver::rt_raw(const std::vector<std::string>& args, Millis timeout_ms) {
  std::string cmd = command(args);
  lg()->debug("{}: {}", cfg_.name, cmd);
  auto r = runner_.run_shell(cmd, {}, timeout_ms);
  if (!r) return make_error("runtime", cfg_.runtime + " could not be run: " + r.error().message);
  if (r->timed_out)
    return make_error("runtime", cfg_.runtime + " " + (args.empty() ? "" : args[0]) + " timed out after " +
                                     std::to_string(timeout_ms) + " ms");
  if (r->exit_code == 127)
    return make_error("runtime_missing", "container runtime '" + cfg_.runtime + "' not found: " + tail(r->output, 300));
  return RunResult{r->exit_code, r->output};
}

Expected<std::string> ContainerDriver::rt(const std::vector<std::string>& args, Millis timeout_ms,
                                          const std::string& what) {
  auto r = rt_raw(args, timeout_ms);
  if (!r) return r.error();
  if (r->exit_code != 0)
    return make_error("runtime", what + " failed (" + cfg_.runtime + " exited with " + std::to_string(r->exit_code) +
                                     "): " + tail(r->output, 600));
  return r->output;
}

Expected<std::string> ContainerDriver::image_id_of(const std::string& ref) {
  auto r = rt_raw({"image", "inspect", "--format", "{{.Id}}", ref}, kInspectTimeoutMs);
  if (!r) return r.error();
  if (r->exit_code != 0) return std::string();
  return strip_sha256(r->output);
}

Expected<bool> ContainerDriver::container_exists(const std::string& name) {
  auto r = rt_raw({"container", "inspect", "--format", "{{.Id}}", name}, kInspectTimeoutMs);
  if (!r) return r.error();
  return r->exit_code == 0;
}

Status ContainerDriver::remove_container(const std::string& name) {
  auto exists = container_exists(name);
  if (!exists) return exists.error();
  if (!*exists) return Status::Ok();
  std::string secs = std::to_string((cfg_.stop_timeout_ms + 999) / 1000);
  // A failed stop is not fatal: rm -f kills what still runs.
  if (auto r = rt({"stop", "-t", secs, name}, cfg_.stop_timeout_ms + kInspectTimeoutMs, "stopping " + name); !r)
    lg()->warn("{}: {}", cfg_.name, r.error().message);
  if (auto r = rt({"rm", "-f", name}, kInspectTimeoutMs, "removing container " + name); !r) return r.error();
  return Status::Ok();
}

Status ContainerDriver::run_container(const std::string& name, const std::string& version,
                                      const std::string& image_id) {
  auto r = rt(run_args(name, version, image_id), cfg_.runtime_timeout_ms, "starting container " + name);
  if (!r) {
    // A failed run can leave a created-but-not-running container holding the name.
    (void)rt_raw({"rm", "-f", name}, kInspectTimeoutMs);
    return r.error();
  }
  // A process that dies at once is reported with its own last words rather than as a probe failure.
  auto st = rt_raw({"container", "inspect", "--format", "{{.State.Running}}", name}, kInspectTimeoutMs);
  if (st && st->exit_code == 0 && trim(st->output) == "false") {
    auto logs = rt_raw({"logs", "--tail", "20", name}, kInspectTimeoutMs);
    std::string why = logs ? tail(logs->output, 600) : "";
    return make_error("runtime", "container " + name + " exited right after start" + (why.empty() ? "" : ": " + why));
  }
  return Status::Ok();
}

std::optional<ContainerDriver::Installed> ContainerDriver::read_installed(const std::string& version) const {
  if (!is_safe_name(version)) return std::nullopt;
  auto text = fs::read_file(release_dir(version) + "/" + kMarker, 64 * 1024);
  if (!text) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(*text);
    Installed in;
    in.sha256 = j.at("sha256").get<std::string>();
    in.image_id = j.at("image_id").get<std::string>();
    in.image = j.value("image", "");
    in.installed_at = j.value("installed_at", int64_t{0});
    if (j.contains("tags"))
      for (const auto& t : j["tags"]) in.tags.push_back(t.get<std::string>());
    if (!is_hex64(in.image_id)) return std::nullopt;
    return in;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

Expected<std::string> ContainerDriver::current_version() { return read_current_version(cfg_.root); }

bool ContainerDriver::has_release(const ReleaseId& r) {
  auto in = read_installed(r.version);
  if (!in || in->sha256 != r.sha256) return false;
  auto id = image_id_of(in->image_id);
  return id && *id == in->image_id;  // the record alone is not enough: someone may have removed the image
}

Status ContainerDriver::check_installable(const ReleaseId& r) {
  auto in = read_installed(r.version);
  if (in && in->sha256 != r.sha256)
    return make_error("conflict", "version " + r.version + " already installed with another digest");
  return Status::Ok();
}

std::string ContainerDriver::partial_artifact_path(const std::string& sha256) {
  return cfg_.root + "/downloads/" + sha256 + ".part";
}

Status ContainerDriver::prune_downloads(const std::string& sha256, bool keep_complete) {
  std::vector<std::string> keep = {sha256 + ".part"};
  if (keep_complete) keep.push_back(sha256 + ".artifact");
  return prune_downloads_except(cfg_.root, keep);
}

std::string ContainerDriver::artifact_path(const std::string& sha256) {
  return cfg_.root + "/downloads/" + sha256 + ".artifact";
}

Status ContainerDriver::finish_download(const ReleaseId& r, const std::string& hashed_sha256) {
  return verify_and_commit_download(r, partial_artifact_path(r.sha256), artifact_path(r.sha256), hashed_sha256);
}

Status ContainerDriver::stage(const ReleaseId& r) {
  if (Status st = check_installable(r); !st.ok()) return st;
  std::string artifact = artifact_path(r.sha256);
  char first = 0;
  {
    std::ifstream in(artifact, std::ios::binary);
    if (!in) return make_error("io", "cannot open " + artifact);
    in.get(first);
  }
  std::string image_id, ref;
  std::vector<std::string> tags;
  if (first == '{') {
    // An image reference pinned by digest: use the local copy if the runtime has it, else pull.
    auto text = fs::read_file(artifact, 64 * 1024);
    if (!text) return text.error();
    auto pinned = parse_image_ref_artifact(*text);
    if (!pinned) return pinned.error();
    ref = pinned->image;
    auto id = image_id_of(ref);
    if (!id) return id.error();
    if (id->empty()) {
      lg()->info("{}: pulling {}", cfg_.name, ref);
      if (auto p = rt({"pull", ref}, cfg_.runtime_timeout_ms, "pulling " + ref); !p) return p.error();
      id = image_id_of(ref);
      if (!id) return id.error();
      if (id->empty()) return make_error("runtime", cfg_.runtime + " pulled " + ref + " but does not know it");
    }
    auto digests = rt({"image", "inspect", "--format", "{{range .RepoDigests}}{{.}} {{end}}", *id}, kInspectTimeoutMs,
                      "inspecting " + ref);
    if (!digests) return digests.error();
    if (digests->find("@" + pinned->digest) == std::string::npos)
      return make_error("digest", "digest mismatch: image " + *id + " has digests [" + trim(*digests) + "], expected " +
                                      pinned->digest);
    image_id = *id;
  } else {
    auto ai = read_archive_image(artifact);
    if (!ai) return ai.error();
    lg()->info("{}: loading image {} from the release archive", cfg_.name, ai->id.substr(0, 12));
    if (auto l = rt({"load", "-q", "-i", artifact}, cfg_.runtime_timeout_ms, "loading the image archive"); !l)
      return l.error();
    auto id = image_id_of(ai->id);
    if (!id) return id.error();
    if (*id != ai->id)
      return make_error("digest", "digest mismatch: the archive holds image " + ai->id + " but " + cfg_.runtime +
                                      " has '" + *id + "' after loading it");
    image_id = *id;
    tags = ai->tags;
  }
  if (auto t = rt({"tag", image_id, image_tag(r.version)}, kInspectTimeoutMs, "tagging the image"); !t)
    return t.error();

  std::string releases = cfg_.root + "/releases";
  std::string dir = release_dir(r.version);
  if (Status st = fs::make_dirs(dir); !st.ok()) return st;
  nlohmann::json marker = {{"service", r.service}, {"version", r.version},    {"sha256", r.sha256},
                           {"size", r.size},       {"image_id", image_id},    {"image", ref},
                           {"tags", tags},         {"runtime", cfg_.runtime}, {"installed_at", clock_.wall_ms()}};
  if (Status st = fs::write_file_atomic(dir + "/" + kMarker, marker.dump(2) + "\n", 0644); !st.ok()) return st;
  if (Status st = fs::fsync_dir(dir); !st.ok()) return st;
  if (Status st = fs::fsync_dir(releases); !st.ok()) return st;
  lg()->info("installed {} {} as image {}", r.service, r.version, image_id.substr(0, 12));
  (void)fs::remove_all(artifact);
  return Status::Ok();
}

Status ContainerDriver::switch_current(const std::string& version) {
  if (!read_installed(version)) return make_error("not_found", "release " + version + " is not installed");
  return fs::replace_symlink(cfg_.root + "/current", "releases/" + version, /*sync_dir=*/false);
}

Status ContainerDriver::sync_current() { return fs::fsync_dir(cfg_.root); }

Status ContainerDriver::restart(const std::string& version) {
  auto in = read_installed(version);
  if (!in) return make_error("restart", "release " + version + " is not installed");
  // Before touching the running container: is the image there? (Keeps the old one on "image not known".)
  if (auto id = rt({"image", "inspect", "--format", "{{.Id}}", in->image_id}, kInspectTimeoutMs,
                   "finding image of " + version);
      !id)
    return make_error("restart", id.error().message);
  const std::string& name = cfg_.container_name;
  // Leftover of an interrupted start-first swap.
  if (Status st = remove_container(next_name()); !st.ok()) return make_error("restart", st.error().message);
  if (cfg_.start_order == "start-first") {
    if (Status st = run_container(next_name(), version, in->image_id); !st.ok()) {
      (void)remove_container(next_name());
      return make_error("restart", st.error().message);  // the old container still runs
    }
    if (Status st = remove_container(name); !st.ok()) return make_error("restart", st.error().message);
    crash_point("container_stopped");
    if (auto r = rt({"rename", next_name(), name}, kInspectTimeoutMs, "renaming " + next_name() + " to " + name); !r)
      return make_error("restart", r.error().message);
  } else {
    if (Status st = remove_container(name); !st.ok()) return make_error("restart", st.error().message);
    crash_point("container_stopped");
    if (Status st = run_container(name, version, in->image_id); !st.ok())
      return make_error("restart", st.error().message);
  }
  lg()->info("{}: container {} runs {} (image {})", cfg_.name, name, version, in->image_id.substr(0, 12));
  return Status::Ok();
}

Status ContainerDriver::prune(uint32_t retain, const std::set<std::string>& keep) {
  std::string releases = cfg_.root + "/releases";
  std::error_code ec;
  std::vector<std::pair<Installed, std::string>> found;
  for (const auto& e : std::filesystem::directory_iterator(releases, ec)) {
    std::string v = e.path().filename().string();
    if (!is_safe_name(v) || !e.is_directory(ec) || e.is_symlink(ec)) continue;
    auto in = read_installed(v);
    found.emplace_back(in ? *in : Installed{}, v);
  }
  if (ec) return make_error("io", "list " + releases + ": " + ec.message());
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first.installed_at > b.first.installed_at; });
  std::set<std::string> kept_ids;
  for (size_t i = 0; i < found.size(); ++i)
    if (i < retain || keep.count(found[i].second)) kept_ids.insert(found[i].first.image_id);
  Status result;
  for (size_t i = retain; i < found.size(); ++i) {
    const auto& [in, v] = found[i];
    if (keep.count(v)) continue;
    lg()->info("pruning release {} of {}", v, cfg_.name);
    if (!in.image_id.empty() && !kept_ids.count(in.image_id)) {
      (void)rt_raw({"rmi", image_tag(v)}, kInspectTimeoutMs);
      // Tags the archive brought, if they still name this image; never anyone else's.
      for (const auto& t : in.tags) {
        auto id = image_id_of(t);
        if (id && *id == in.image_id) (void)rt_raw({"rmi", t}, kInspectTimeoutMs);
      }
      // Without force: an image another container or tag still uses stays.
      if (auto r = rt({"rmi", in.image_id}, kInspectTimeoutMs, "removing image " + in.image_id.substr(0, 12)); !r)
        lg()->info("{}: image kept: {}", cfg_.name, r.error().message);
    }
    if (Status st = fs::remove_all(releases + "/" + v); !st.ok()) result = st;
  }
  (void)fs::fsync_dir(releases);
  return result;
}

Status ContainerDriver::cleanup() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(cfg_.root, ec)) {
    if (e.path().filename().string().rfind("current.tmp.", 0) == 0) (void)fs::remove_all(e.path().string());
  }
  if (Status st = fs::make_dirs(cfg_.root + "/releases"); !st.ok()) return st;
  return fs::make_dirs(cfg_.root + "/downloads");
}

}  // namespace gantry::agent
