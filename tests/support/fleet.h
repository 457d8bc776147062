// End-to-end test harness: real processes, real sockets, real files, all on loopback and under
// one temp dir per test, cleaned up by RAII even when the test fails.
//
// Everything here is for the integration tests only. Setup failures (cannot fork, a daemon does
// not come up in time, a script fails) throw std::runtime_error with the relevant log excerpt;
// gtest reports that as a test failure, and the destructors still clean up.
//
// Typical use:
//   gantry::testing::Fleet fleet(3);
//   fleet.start_coordinator();
//   for (int i = 0; i < fleet.size(); ++i) fleet.start_agent(i);
//   const auto v2 = fleet.make_release("v2", "healthy");
//   auto r = fleet.cli({"rollout", "start", ...});
//   EXPECT_EQ(r.exit_code, 0) << r.out << r.err << fleet.diagnostics();
//   EXPECT_EQ(fleet.served_version(0), "v2");
#pragma once

#include <sys/types.h>

#include <csignal>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gantry::testing {

// Build and source trees, as compiled in (GANTRY_BIN_DIR / GANTRY_SOURCE_DIR).
std::string bin_dir();
std::string source_dir();

// A fresh directory under $TMPDIR (or /tmp), removed recursively in the destructor unless the
// environment has GANTRY_KEEP_TEST_DIRS=1 (then its path is printed to stderr instead).
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "gantry-test");
  ~TempDir();
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Absolute path, without a trailing slash.
  const std::string& path() const { return path_; }
  // path() + "/" + rel.
  std::string sub(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  void remove();
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound, then closed), below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range): a port from that range can be taken at any
// moment by an outgoing connection's local end (an agent's, the CLI's), and a coordinator that
// binds it again later (a standby becoming the leader, a restart) would find it in use. Never
// the same port twice in one process.
int free_tcp_port();

struct HttpResult {
  int status = 0;
  std::string body;
};

// GET http://127.0.0.1:<port><path> with a plain socket, bounded by timeout_ms overall.
// nullopt when nothing answers (refused, timeout, malformed reply).
std::optional<HttpResult> http_get(int port, const std::string& path, int timeout_ms = 1000);

// A child process in its own process group, stdin from /dev/null, stdout+stderr appended to a
// log file. The destructor SIGKILLs the whole group if the child is still alive and reaps it.
class Process {
 public:
  Process() = default;  // empty: pid() == -1, alive() == false
  // Spawns argv[0] (searched in PATH when it has no '/') with the current environment plus
  // `env` (overriding). Throws std::runtime_error if the program cannot be executed.
  Process(const std::vector<std::string>& argv, const std::string& log_path,
          const std::map<std::string, std::string>& env = {});
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // True while the child runs; reaps it (and records its status) once it has exited.
  bool alive();
  // Sends `sig` to the child's whole process group. False if already reaped or on error.
  bool signal(int sig);
  // Waits up to timeout_ms for the child to exit. Returns its exit code, or 128+signal when it
  // was killed by a signal; nullopt if still running at the timeout (or empty).
  std::optional<int> wait_exit(int timeout_ms);
  // SIGKILLs the group (if still running) and reaps the child. Safe to call repeatedly.
  void kill_and_reap();

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;  // exit code / 128+signal once reaped_
  std::string log_path_;
};

struct CmdResult {
  int exit_code = -1;      // exit code, 128+signal if killed, -1 if it could not be run
  std::string out, err;    // captured stdout / stderr (each capped at 16 MiB)
  bool timed_out = false;  // killed (whole process group, SIGKILL) at timeout_ms
};

// Runs argv to completion with stdin from /dev/null, capturing stdout and stderr. On timeout the
// child's process group is SIGKILLed. Returns as soon as the child exits, even if it left
// daemons behind that still hold its output pipes.
CmdResult run(const std::vector<std::string>& argv, int timeout_ms = 120000,
              const std::map<std::string, std::string>& env = {});

// Polls cond every step_ms until it holds or timeout_ms passes; returns the last result.
// Only for end-to-end tests, where the thing awaited is another process.
bool wait_until(const std::function<bool()>& cond, int timeout_ms, int step_ms = 50);

// Whether a pid names a live (non-zombie) process; false for pid <= 0.
bool pid_running(pid_t pid);

// Reads a whole file; "" when it does not exist.
std::string read_file(const std::string& path);

// A command's stdout parsed as JSON (the CLI's --json output); null when it is not JSON.
inline nlohmann::json json_of(const CmdResult& r) {
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception&) {
    return nlohmann::json();
  }
}

struct AgentSpec {
  std::string host_id;
  std::map<std::string, std::string> labels;
};

struct FleetOptions {
  // Written into every agent's [service.demo] section.
  int min_healthy_ms = 500;
  int healthy_deadline_ms = 5000;
  int probe_interval_ms = 100;
  // Written into the agent config and passed to the coordinator. 200 ms x 10: a host goes
  // unknown after 2 s of silence. ctest runs two tests at once on two cores, beside podman;
  // an agent's main thread blocked that long in its journal's fdatasync (or simply not
  // scheduled) is not a dead host. With 3 misses (0.6 s) a rollout test lost a healthy agent
  // mid-batch in CI once in about six runs. Tests about dead hosts set their own, shorter.
  int heartbeat_interval_ms = 200;
  int heartbeat_misses = 10;
  // The coordinator's --restart-grace-ms. 0 (the tests' default): restored hosts get only the
  // heartbeat timeout, so tests that restart the coordinator see dead hosts go unknown quickly.
  int restart_grace_ms = 0;
  // How long start_coordinator() waits for endpoints.json.
  int coordinator_start_timeout_ms = 10000;
  // Programs to run instead of <bin>/coordinator/gantry-coordinator and <bin>/agent/gantry-agent
  // (empty: those). For stand-ins in harness tests, or a wrapper such as valgrind.
  std::string coordinator_binary;
  std::string agent_binary;
  // Appended to the coordinator's command line / to each agent's top-level config section.
  std::vector<std::string> coordinator_extra_args;
  std::vector<std::string> agent_extra_config_lines;
  // When set, its result replaces the body of agent i's [service.demo] section (the lines after
  // the section header; `port` and `root` are agent i's demo port and install root) — e.g. a
  // driver = container service. Empty: the binary demo service.
  std::function<std::string(int i, int port, const std::string& root)> service_section;
  // Plaintext ZeroMQ and unsigned releases (--insecure-dev everywhere). By default the fleet is
  // secure like a real deployment: keys made with the keygen commands (<dir>/keys/), CURVE on
  // every socket, an admin operator key for cli(), releases signed by make_release().
  bool insecure = false;
  // Secure fleets only: accept each agent's key at coordinator start (--accept-agent-key).
  // false: agents show up as pending until a test runs `gantry keys accept`.
  bool enroll_agents = true;
  // The coordinator's agent, PUB and operator endpoints on IPv6 loopback (tcp://[::1]:PORT):
  // agents, their heartbeat datagrams and the CLI then all go over ::1.
  bool ipv6 = false;
  // Several coordinators sharing one store (issue 23, docs/HIGH_AVAILABILITY.md): with
  // coordinators > 1 (and `store` an etcd://... URI) the fleet runs that many, named c1, c2, ...,
  // each on its own fixed loopback ports, state dir <dir>/coordinator-<k+1>/ and log
  // <dir>/coordinator-<k+1>.log. endpoints() then lists every coordinator's endpoints,
  // comma-separated, so the agents and the CLI follow the leader by themselves.
  int coordinators = 1;
  std::string store;  // passed as --store when not empty
};

// Concrete endpoints the coordinator reported in <state-dir>/endpoints.json after binding.
struct CoordinatorEndpoints {
  std::string agent;      // tcp://127.0.0.1:PORT (ROUTER for agents)
  std::string pub;        // tcp://127.0.0.1:PORT (PUB for fleet-wide signals)
  std::string operator_;  // tcp://127.0.0.1:PORT (ROUTER for the CLI)
  std::string http;       // 127.0.0.1:PORT (monitoring)
};

// A coordinator plus N agents on loopback, each agent with its own install root and its own
// demo-service port (fixed at construction, so it survives agent restarts).
//
// Agents are indexed 0..size()-1; agent i has host id spec(i).host_id ("host-<i+1>" for
// Fleet(int)) and lives in <dir>/agent-<i+1>/:
//   agent.conf, agent.log, state/ (agent state_dir), demo/ (the demo service's install root,
//   with releases/, current, service.pid, service.log written by the agent and restart-service).
// The coordinator lives in <dir>/coordinator/ (its --state-dir) and logs to
// <dir>/coordinator.log; releases made by make_release() go to <dir>/releases/.
//
// The destructor SIGKILLs and reaps every agent and the coordinator, stops every demo service
// (demo/stop-service, then SIGKILL of anything left), SIGKILLs any other process whose command
// line mentions the fleet's temp dir, and removes the temp dir (see GANTRY_KEEP_TEST_DIRS).
class Fleet {
 public:
  explicit Fleet(std::vector<AgentSpec> agents, FleetOptions options = {});
  explicit Fleet(int n, FleetOptions options = {});
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  int size() const { return static_cast<int>(agents_.size()); }
  const AgentSpec& spec(int i) const;
  const std::string& host_id(int i) const { return spec(i).host_id; }

  // --- coordinator ---
  // Starts it on wildcard ports and waits (bounded) for endpoints.json; throws (with the log)
  // if it exits or times out. If it ran before in this fleet, it comes back on the same
  // concrete endpoints instead (like restart_coordinator after kill_coordinator).
  void start_coordinator();
  // Kills the running coordinator (if any, with SIGKILL) and starts it again on the SAME
  // concrete endpoints and state dir, so agents reconnect to where they were.
  void restart_coordinator();
  // Sends sig to its process group, waits up to 10 s for the exit (then SIGKILLs) and reaps.
  // Returns the exit status (exit code or 128+signal; also when it had already exited by
  // itself); nullopt if it was never started.
  std::optional<int> kill_coordinator(int sig = SIGKILL);
  bool coordinator_running();
  const CoordinatorEndpoints& endpoints() const;  // throws if never started
  pid_t coordinator_pid() const { return coordinator_.pid(); }

  // --- several coordinators (FleetOptions::coordinators > 1) ---
  // start_coordinator() starts them all and waits (bounded) until one of them leads.
  int coordinator_count() const { return static_cast<int>(ha_.size()); }
  // Starts coordinator k (0-based) again on its own endpoints; does not wait for anything.
  void start_coordinator_at(int k);
  // Same contract as kill_coordinator, for coordinator k.
  std::optional<int> kill_coordinator_at(int k, int sig = SIGKILL);
  bool coordinator_running_at(int k);
  pid_t coordinator_pid_at(int k) const;
  // The coordinator whose /status says it leads, polled every 50 ms for up to timeout_ms;
  // -1 if none does by then.
  int leader(int timeout_ms = 20000);
  // Coordinator k's /status as JSON (null when it does not answer).
  nlohmann::json coordinator_status_at(int k);
  std::string coordinator_log_at(int k) const;
  const CoordinatorEndpoints& endpoints_at(int k) const;

  // --- agents ---
  // Writes agent i's config and starts it (extra_env is remembered for restart_agent).
  // Does not wait for it to register: poll the coordinator (e.g. cli({"hosts","--json"})).
  void start_agent(int i, const std::map<std::string, std::string>& extra_env = {});
  void start_all_agents();
  // Same contract as kill_coordinator.
  std::optional<int> kill_agent(int i, int sig = SIGKILL);
  // kill_agent(i, SIGKILL) if running, then start_agent(i) with the last extra_env.
  void restart_agent(int i);
  bool agent_running(int i);
  pid_t agent_pid(int i) const;
  // Writes <dir>/agent-<i+1>/agent.conf (start_agent does this; public for inspection).
  std::string write_agent_config(int i);
  std::string agent_config_path(int i) const;

  // --- releases, CLI, observations ---
  // scripts/make-demo-release into <dir>/releases/<version>-<behaviour>.tar; returns the path.
  std::string make_release(const std::string& version, const std::string& behaviour);
  // Runs `<bin>/cli/gantry --coordinator <operator endpoint> args...` (as the admin operator
  // when the fleet is secure).
  CmdResult cli(const std::vector<std::string>& args, int timeout_ms = 120000);
  // The same with another operator key (secret key file); "" runs without any key.
  CmdResult cli_as(const std::string& key_file, const std::vector<std::string>& args, int timeout_ms = 120000);
  // GET / on agent i's demo port, parsed "version=<v>"; nullopt if not answering 200.
  std::optional<std::string> served_version(int i);
  // The pid in agent i's demo/service.pid if that process is running.
  std::optional<pid_t> service_pid(int i) const;

  std::string agent_log(int i) const;
  std::string coordinator_log() const;
  std::string service_log(int i) const;
  // Tails of every log above, labelled: append to assertion messages.
  std::string diagnostics(size_t max_bytes_per_log = 8192) const;

  const std::string& dir() const { return dir_.path(); }
  std::string agent_dir(int i) const;  // <dir>/agent-<i+1>
  std::string root(int i) const;       // <dir>/agent-<i+1>/demo
  int port(int i) const;               // agent i's demo-service port
  std::string state_dir() const;       // the coordinator's --state-dir
  const FleetOptions& options() const { return options_; }

  // --- keys (secure fleets) ---
  bool secure() const { return !options_.insecure; }
  // <dir>/keys/: coordinator.{key,pub}, admin.{key,pub}, release.{key,pub}.
  std::string keys_dir() const { return dir() + "/keys"; }
  // Agent i's key prefix: <dir>/agent-<i+1>/agent (.key, .pub).
  std::string agent_key_prefix(int i) const { return agent_dir(i) + "/agent"; }

 private:
  struct Agent {
    AgentSpec spec;
    int port = 0;
    std::map<std::string, std::string> env;
    Process process;
  };

  std::vector<std::string> coordinator_argv(const CoordinatorEndpoints& listen) const;
  std::vector<std::string> coordinator_argv_at(int k) const;
  void launch_coordinator(const CoordinatorEndpoints& listen);
  void check_index(int i) const;
  void cleanup() noexcept;
  void make_keys();

  TempDir dir_;
  FleetOptions options_;
  std::vector<Agent> agents_;
  Process coordinator_;
  std::optional<CoordinatorEndpoints> endpoints_;
  struct HaCoordinator {
    CoordinatorEndpoints listen;  // fixed at construction
    Process process;
  };
  std::vector<HaCoordinator> ha_;  // FleetOptions::coordinators > 1
};

}  // namespace gantry::testing
