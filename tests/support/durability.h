// Small helpers shared by the durability tests (agent/coordinator crashes, partitions, disk
// faults, soak): reading the coordinator's record through the CLI and checking an install root.
// Header-only; every wait is bounded.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/support/fleet.h"

namespace gantry::testing {

// Durability tests run the fleet as users do: CURVE keys, enrolled agents, signed releases.
// Set to true to isolate a crash bug from key handling while debugging.
inline constexpr bool kInsecure = false;

inline bool is_terminal_phase(const std::string& p) {
  return p == "succeeded" || p == "failed" || p == "rolled_back" || p == "aborted";
}

// The agent's journal (agent-state.json + the records of agent-state.journal after it) as the
// agent reads it, through `gantry-agent state`; null json when it cannot be read.
inline nlohmann::json agent_journal(Fleet& f, int i) {
  auto r = run({std::string(GANTRY_BIN_DIR) + "/agent/gantry-agent", "state", "--state-dir", f.agent_dir(i) + "/state"},
               10000);
  if (r.exit_code != 0) return nlohmann::json();
  return json_of(r);
}

// The phase of the agent's active order ("" when none or unreadable).
inline std::string agent_journal_phase(Fleet& f, int i) {
  auto j = agent_journal(f, i);
  if (!j.is_object() || !j.contains("active") || !j["active"].is_object()) return "";
  return j["active"].value("phase", "");
}

// `gantry --json hosts`; empty json when the coordinator does not answer.
inline nlohmann::json hosts_json(Fleet& f) { return json_of(f.cli({"--json", "hosts"}, 10000)); }

inline int online_hosts(Fleet& f) {
  auto j = hosts_json(f);
  int n = 0;
  if (j.contains("hosts")) {
    for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
  }
  return n;
}

// What the coordinator's registry says host `host_id` runs for service demo (nullopt: no answer).
inline std::optional<std::string> recorded_version(const nlohmann::json& hosts, const std::string& host_id) {
  if (!hosts.contains("hosts")) return std::nullopt;
  for (const auto& h : hosts["hosts"]) {
    if (h.value("host_id", "") != host_id) continue;
    for (const auto& s : h["services"]) {
      if (s.value("name", "") == "demo") return s.value("current_version", "");
    }
  }
  return std::nullopt;
}

// The durability tests' rollout of v2 (release file `rel`): 2 batches, at most 1 failure,
// 1.5 s between batches, 500 ms healthy time, 2 s deadline, rollback one host at a time.
inline CmdResult start_durability_rollout(Fleet& f, const std::string& rel) {
  return f.cli({"--json", "rollout",
                "start",  "--service",
                "demo",   "--version",
                "v2",     "--release",
                rel,      "--batches",
                "2",      "--max-failures",
                "1",      "--batch-delay",
                "1500",   "--min-healthy-time",
                "500",    "--healthy-deadline",
                "2s",     "--rollback-batch-size",
                "1"});
}

// Milliseconds since t0 (steady clock).
inline int64_t ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

// `gantry --json rollout show ID` (with events); empty json when there is no answer.
inline nlohmann::json rollout_get(Fleet& f, uint64_t id) {
  return json_of(f.cli({"--json", "rollout", "show", std::to_string(id)}, 10000));
}

inline nlohmann::json last_rollout(Fleet& f) {
  auto st = json_of(f.cli({"--json", "status", "--service", "demo"}, 10000));
  if (!st.contains("rollouts") || st["rollouts"].empty()) return {};
  return st["rollouts"][0];
}

// Waits (bounded) until rollout `id` is in a terminal phase; returns its view (with events),
// or the last view seen.
inline nlohmann::json wait_rollout_end(Fleet& f, uint64_t id, int timeout_ms) {
  nlohmann::json last;
  wait_until(
      [&] {
        auto r = rollout_get(f, id);
        if (!r.is_null()) last = r;
        return is_terminal_phase(last.value("phase", ""));
      },
      timeout_ms, 200);
  return last;
}

inline std::string host_state(const nlohmann::json& rollout, const std::string& host_id) {
  if (!rollout.contains("hosts")) return "";
  for (const auto& h : rollout["hosts"]) {
    if (h.value("host_id", "") == host_id) return h.value("state", "");
  }
  return "";
}

inline std::string events_text(const nlohmann::json& rollout) {
  std::string log;
  if (rollout.contains("events")) {
    for (const auto& e : rollout["events"]) log += e.value("message", "") + "\n";
  }
  return log;
}

// Starts the coordinator and every agent and waits until all are online.
inline bool start_fleet(Fleet& f) {
  f.start_coordinator();
  f.start_all_agents();
  return wait_until([&] { return online_hosts(f) == f.size(); }, 30000, 100);
}

// Uploads `version` (healthy) and installs it on every host in one batch; true on success.
inline bool install_everywhere(Fleet& f, const std::string& version, std::string* why = nullptr) {
  const auto rel = f.make_release(version, "healthy");
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", version, "--release", rel, "--batches", "100%",
                  "--min-healthy-time", "200", "--wait"});
  if (r.exit_code != 0 && why != nullptr) *why = r.out + r.err;
  return r.exit_code == 0;
}

// The state of one install root: where `current` points, whether that release is complete
// (has the agent's marker and the service binary), and what else lies around.
struct RootState {
  std::string current;  // version `current` points at ("" if missing or not a release link)
  bool current_complete = false;
  std::vector<std::string> staging_leftovers;  // entries under <root>/staging
  std::vector<std::string> problems;           // human-readable, empty when all is well
};

inline RootState inspect_root(const std::string& root) {
  RootState s;
  std::error_code ec;
  const std::string cur = root + "/current";
  struct stat st {};
  if (::lstat(cur.c_str(), &st) != 0) {
    s.problems.push_back("current is missing");
    return s;
  }
  if (!S_ISLNK(st.st_mode)) {
    s.problems.push_back("current is not a symlink");
    return s;
  }
  const auto target = std::filesystem::read_symlink(cur, ec).string();
  if (target.rfind("releases/", 0) != 0) {
    s.problems.push_back("current points at '" + target + "'");
    return s;
  }
  s.current = target.substr(9);
  const std::string dir = root + "/releases/" + s.current;
  s.current_complete = std::filesystem::exists(dir + "/.gantry-release", ec) &&
                       ::access((dir + "/bin/gantry-demo-service").c_str(), X_OK) == 0 &&
                       read_file(dir + "/release.conf").find("version=" + s.current) != std::string::npos;
  if (!s.current_complete) s.problems.push_back("release " + s.current + " is incomplete");
  for (const auto& e : std::filesystem::directory_iterator(root + "/staging", ec)) {
    s.staging_leftovers.push_back(e.path().filename().string());
  }
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const auto name = e.path().filename().string();
    if (name.rfind("current.tmp", 0) == 0) s.problems.push_back("leftover " + name);
  }
  return s;
}

// Counts non-overlapping occurrences of `needle` in `hay`.
inline int count_of(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

}  // namespace gantry::testing
