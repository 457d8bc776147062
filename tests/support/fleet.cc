#include "tests/support/fleet.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef GANTRY_BIN_DIR
#error "GANTRY_BIN_DIR must be defined (the CMake build directory)"
#endif
#ifndef GANTRY_SOURCE_DIR
#error "GANTRY_SOURCE_DIR must be defined (the repository root)"
#endif

extern char** environ;

namespace gantry::testing {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxCapture = 16 * 1024 * 1024;
// Coordinators started by the tests re-check the rollout machine's incremental bookkeeping
// after every step (coordinator/main.cc); children inherit the environment.
const bool kRolloutSelfCheck = (::setenv("GANTRY_ROLLOUT_SELF_CHECK", "1", 0), true);
constexpr int kKillWaitMs = 10000;

std::string errno_text(const std::string& what, int err = errno) { return what + ": " + std::strerror(err); }

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Converts a waitpid status to "exit code, or 128+signal".
int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// argv[0] as given when it contains '/', otherwise the first executable match in $PATH.
std::string resolve_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return name;  // execve will fail with ENOENT, reported to the caller
}

// Everything execve needs, built before fork() so the child only makes async-signal-safe calls.
struct ExecImage {
  std::string program;
  std::vector<std::string> args, envs;
  std::vector<char*> argv, envp;

  ExecImage(const std::vector<std::string>& a, const std::map<std::string, std::string>& extra) {
    if (a.empty()) throw std::invalid_argument("empty argv");
    program = resolve_program(a[0]);
    args = a;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      const std::string kv = *e;
      const auto key = kv.substr(0, kv.find('='));
      if (extra.count(key) == 0) envs.push_back(kv);
    }
    for (const auto& [k, v] : extra) envs.push_back(k + "=" + v);
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : envs) envp.push_back(s.data());
    envp.push_back(nullptr);
  }
};

// Forks and execs `image` in a new process group with the given stdio fds. Returns the pid,
// or throws (with the exec errno) if the program could not be started.
pid_t spawn(const ExecImage& image, int in_fd, int out_fd, int err_fd) {
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) != 0) throw std::runtime_error(errno_text("pipe2"));
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(status_pipe[0]);
    ::close(status_pipe[1]);
    throw std::runtime_error(errno_text("fork", err));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) ::signal(sig, SIG_DFL);
    if (::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) {
      const int err = errno;
      [[maybe_unused]] auto n = ::write(status_pipe[1], &err, sizeof err);
      ::_exit(127);
    }
    // Whatever the test process has open must not leak into daemons (sockets, other pipes).
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    ::execve(image.program.c_str(), image.argv.data(), image.envp.data());
    const int err = errno;
    [[maybe_unused]] auto n = ::write(status_pipe[1], &err, sizeof err);
    ::_exit(127);
  }
  // Also from the parent, so a signal sent right after spawn() reaches the right group.
  ::setpgid(pid, pid);
  ::close(status_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(status_pipe[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(status_pipe[0]);
  if (n > 0) {
    int ignored;
    ::waitpid(pid, &ignored, 0);
    throw std::runtime_error(errno_text("cannot execute " + image.program, child_errno));
  }
  return pid;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

Fd open_or_throw(const std::string& path, int flags, mode_t mode = 0644) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error(errno_text("open " + path));
  return Fd(fd);
}

std::string tail(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  return "...(" + std::to_string(s.size() - max_bytes) + " bytes cut)...\n" + s.substr(s.size() - max_bytes);
}

// Reads /proc/<pid>/cmdline with NULs turned into spaces; "" if unreadable.
std::string proc_cmdline(pid_t pid) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

// SIGKILLs every process (other than this one) whose command line mentions `needle`. Scoped
// to one fleet's unique temp dir, this catches anything its daemons left behind (a restart
// script caught mid-flight, a service started after stop-service ran) without touching other
// tests' processes.
int kill_processes_mentioning(const std::string& needle) {
  int killed = 0;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return 0;
  const pid_t self = ::getpid();
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid <= 0 || pid == self) continue;
    if (!pid_running(static_cast<pid_t>(pid))) continue;
    if (proc_cmdline(static_cast<pid_t>(pid)).find(needle) == std::string::npos) continue;
    if (::kill(static_cast<pid_t>(pid), SIGKILL) == 0) ++killed;
  }
  ::closedir(proc);
  return killed;
}

// Signals a Process, waits (bounded) for it to exit, SIGKILLs it if it does not, reaps it.
std::optional<int> stop_process(Process& p, int sig) {
  if (p.pid() < 0) return std::nullopt;
  if (p.alive()) {
    p.signal(sig);
    if (!p.wait_exit(kKillWaitMs)) p.kill_and_reap();
  }
  return p.wait_exit(0);
}

}  // namespace

std::string bin_dir() { return GANTRY_BIN_DIR; }
std::string source_dir() { return GANTRY_SOURCE_DIR; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool pid_running(pid_t pid) {
  if (pid <= 0) return false;
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  const char state = stat[paren + 2];
  return state != 'Z' && state != 'X' && state != 'x';
}

// ---------------------------------------------------------------------------------------------
// TempDir

TempDir::TempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
  std::string templ = base + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error(errno_text("mkdtemp " + templ));
  std::error_code ec;
  const auto canonical = std::filesystem::canonical(buf.data(), ec);
  path_ = ec ? std::string(buf.data()) : canonical.string();
}

TempDir::~TempDir() { remove(); }

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

void TempDir::remove() {
  if (path_.empty()) return;
  const char* keep = std::getenv("GANTRY_KEEP_TEST_DIRS");
  if (keep != nullptr && std::string(keep) == "1") {
    std::cerr << "[gantry-test] keeping " << path_ << "\n";
  } else {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (ec) std::cerr << "[gantry-test] could not remove " << path_ << ": " << ec.message() << "\n";
  }
  path_.clear();
}

// ---------------------------------------------------------------------------------------------
// Sockets

namespace {

// The first port of the kernel's ephemeral range (32768 when it cannot be read).
int ephemeral_low() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int lo = 0, hi = 0;
  if (in >> lo >> hi && lo > 1024 && lo <= 65535) return lo;
  return 32768;
}

// Whether 127.0.0.1:port can be bound now (by a listener, as ZeroMQ and the tools bind).
bool bindable(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error(errno_text("socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

int free_tcp_port() {
  // Ports [kLowest, the ephemeral range) in a random order per process, so that tests running
  // in parallel rarely pick the same one; each is checked free before it is handed out.
  constexpr int kLowest = 10000;
  static std::mutex mu;
  static std::mt19937 rng(static_cast<uint32_t>(::getpid()) * 2654435761u ^
                          static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  const int hi = ephemeral_low();
  if (hi - kLowest < 1000) throw std::runtime_error("free_tcp_port: the ephemeral range starts too low");
  // Never the same port twice in one process: a test's own ports (a start-first slot's) and
  // the fleet's (its coordinator's) are picked apart, so neither can bind the other's.
  static std::set<int> handed_out;
  std::lock_guard<std::mutex> lk(mu);
  std::uniform_int_distribution<int> pick(kLowest, hi - 1);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = pick(rng);
    if (handed_out.count(port) || !bindable(port)) continue;
    handed_out.insert(port);
    return port;
  }
  throw std::runtime_error("free_tcp_port: no free port below " + std::to_string(hi) + " in 1000 tries");
}

std::optional<HttpResult> http_get(int port, const std::string& path, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) return std::nullopt;
    pollfd pfd{fd.get(), POLLOUT, 0};
    if (::poll(&pfd, 1, ms_left(deadline)) != 1) return std::nullopt;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      return std::nullopt;
    }
  }

  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      pollfd pfd{fd.get(), POLLOUT, 0};
      if (::poll(&pfd, 1, ms_left(deadline)) != 1) return std::nullopt;
      continue;
    }
    return std::nullopt;
  }

  std::string reply;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      reply.append(buf, static_cast<size_t>(n));
      if (reply.size() > kMaxCapture) return std::nullopt;
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) break;  // a reset after a complete reply still counts below
    pollfd pfd{fd.get(), POLLIN, 0};
    const int left = ms_left(deadline);
    if (left == 0 || ::poll(&pfd, 1, left) != 1) break;
  }

  // "HTTP/1.x NNN reason\r\n headers \r\n\r\n body"
  if (reply.rfind("HTTP/", 0) != 0) return std::nullopt;
  const auto sp = reply.find(' ');
  const auto header_end = reply.find("\r\n\r\n");
  if (sp == std::string::npos || header_end == std::string::npos || sp + 4 > reply.size()) {
    return std::nullopt;
  }
  HttpResult result;
  try {
    result.status = std::stoi(reply.substr(sp + 1, 3));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  result.body = reply.substr(header_end + 4);
  // Honour Content-Length when present; a short body means the reply was cut off.
  std::string headers = reply.substr(0, header_end);
  std::transform(headers.begin(), headers.end(), headers.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (const auto cl = headers.find("\r\ncontent-length:"); cl != std::string::npos) {
    const size_t length = std::strtoul(headers.c_str() + cl + 17, nullptr, 10);
    if (result.body.size() < length) return std::nullopt;
    result.body.resize(length);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Process

Process::Process(const std::vector<std::string>& argv, const std::string& log_path,
                 const std::map<std::string, std::string>& env)
    : log_path_(log_path) {
  const ExecImage image(argv, env);
  Fd devnull = open_or_throw("/dev/null", O_RDONLY);
  Fd log = open_or_throw(log_path, O_WRONLY | O_CREAT | O_APPEND);
  pid_ = spawn(image, devnull.get(), log.get(), log.get());
}

Process::~Process() { kill_and_reap(); }

Process::Process(Process&& other) noexcept
    : pid_(other.pid_), reaped_(other.reaped_), status_(other.status_), log_path_(std::move(other.log_path_)) {
  other.pid_ = -1;
  other.reaped_ = false;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = other.pid_;
    reaped_ = other.reaped_;
    status_ = other.status_;
    log_path_ = std::move(other.log_path_);
    other.pid_ = -1;
    other.reaped_ = false;
  }
  return *this;
}

bool Process::alive() {
  if (pid_ < 0 || reaped_) return false;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return true;
  reaped_ = true;
  status_ = r == pid_ ? decode_status(status) : -1;
  return false;
}

bool Process::signal(int sig) {
  if (pid_ < 0 || reaped_) return false;
  return ::killpg(pid_, sig) == 0;
}

std::optional<int> Process::wait_exit(int timeout_ms) {
  if (pid_ < 0) return std::nullopt;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (!alive()) return status_;
    if (Clock::now() >= deadline) return std::nullopt;
    sleep_ms(std::min(10, std::max(1, ms_left(deadline))));
  }
}

void Process::kill_and_reap() {
  if (pid_ < 0) return;
  if (!reaped_) {
    // The group: the child and anything it spawned without leaving the group.
    ::killpg(pid_, SIGKILL);
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    reaped_ = true;
    status_ = r == pid_ ? decode_status(status) : -1;
  }
}

// ---------------------------------------------------------------------------------------------
// run / wait_until

CmdResult run(const std::vector<std::string>& argv, int timeout_ms, const std::map<std::string, std::string>& env) {
  CmdResult result;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    result.err = errno_text("pipe2");
    return result;
  }
  Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.err = errno_text("pipe2");
    return result;
  }
  Fd err_r(err_pipe[0]), err_w(err_pipe[1]);
  pid_t pid;
  try {
    const ExecImage image(argv, env);
    Fd devnull = open_or_throw("/dev/null", O_RDONLY);
    pid = spawn(image, devnull.get(), out_w.get(), err_w.get());
  } catch (const std::exception& e) {
    result.err = e.what();
    return result;
  }
  out_w.reset();
  err_w.reset();
  ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);

  auto drain = [](int fd, std::string& into) {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        if (into.size() < kMaxCapture) {
          into.append(buf, std::min(static_cast<size_t>(n), kMaxCapture - into.size()));
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n == 0;  // true at EOF
    }
  };

  bool out_open = true, err_open = true;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      // Exited: take what it wrote, but do not wait for daemons that inherited the pipes.
      drain(out_r.get(), result.out);
      drain(err_r.get(), result.err);
      result.exit_code = decode_status(status);
      return result;
    }
    if (Clock::now() >= deadline) {
      ::killpg(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      drain(out_r.get(), result.out);
      drain(err_r.get(), result.err);
      result.exit_code = decode_status(status);
      result.timed_out = true;
      return result;
    }
    pollfd pfds[2];
    nfds_t n = 0;
    if (out_open) pfds[n++] = {out_r.get(), POLLIN, 0};
    if (err_open) pfds[n++] = {err_r.get(), POLLIN, 0};
    // Short timeout: the exit itself is noticed by waitpid, not by the pipes closing.
    ::poll(n > 0 ? pfds : nullptr, n, std::min(20, std::max(1, ms_left(deadline))));
    if (out_open && drain(out_r.get(), result.out)) out_open = false;
    if (err_open && drain(err_r.get(), result.err)) err_open = false;
  }
}

bool wait_until(const std::function<bool()>& cond, int timeout_ms, int step_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (cond()) return true;
    if (Clock::now() >= deadline) return false;
    sleep_ms(std::max(1, std::min(step_ms, ms_left(deadline))));
  }
}

// ---------------------------------------------------------------------------------------------
// Fleet

namespace {

std::vector<AgentSpec> numbered_hosts(int n) {
  std::vector<AgentSpec> specs;
  for (int i = 1; i <= n; ++i) specs.push_back({"host-" + std::to_string(i), {}});
  return specs;
}

std::optional<CoordinatorEndpoints> read_endpoints(const std::string& path) {
  const std::string text = read_file(path);
  if (text.empty()) return std::nullopt;
  try {
    const auto j = nlohmann::json::parse(text);
    CoordinatorEndpoints ep;
    ep.agent = j.at("agent").get<std::string>();
    ep.pub = j.at("pub").get<std::string>();
    ep.operator_ = j.at("operator").get<std::string>();
    ep.http = j.at("http").get<std::string>();
    if (ep.agent.empty() || ep.pub.empty() || ep.operator_.empty() || ep.http.empty()) {
      return std::nullopt;
    }
    return ep;
  } catch (const std::exception&) {
    return std::nullopt;  // not written yet, or written non-atomically: try again
  }
}

}  // namespace

Fleet::Fleet(int n, FleetOptions options) : Fleet(numbered_hosts(n), std::move(options)) {}

Fleet::Fleet(std::vector<AgentSpec> agents, FleetOptions options) : dir_("gantry-fleet"), options_(std::move(options)) {
  std::set<std::string> ids;
  for (auto& spec : agents) {
    if (spec.host_id.empty() || !ids.insert(spec.host_id).second) {
      throw std::invalid_argument("Fleet: empty or duplicate host id '" + spec.host_id + "'");
    }
    Agent agent;
    agent.spec = std::move(spec);
    // Distinct within the process (free_tcp_port never repeats); picked in a random order per
    // process, so collisions with other tests running in parallel are unlikely.
    agent.port = free_tcp_port();
    agents_.push_back(std::move(agent));
  }
  std::filesystem::create_directories(state_dir());
  std::filesystem::create_directories(dir() + "/releases");
  if (options_.coordinators > 1) {
    CoordinatorEndpoints all;
    const auto join = [](std::string& list, const std::string& ep) { list += (list.empty() ? "" : ",") + ep; };
    for (int k = 0; k < options_.coordinators; ++k) {
      HaCoordinator c;
      const auto ep = [] { return free_tcp_port(); };
      c.listen.agent = "tcp://127.0.0.1:" + std::to_string(ep());
      c.listen.pub = "tcp://127.0.0.1:" + std::to_string(ep());
      c.listen.operator_ = "tcp://127.0.0.1:" + std::to_string(ep());
      c.listen.http = "127.0.0.1:" + std::to_string(ep());
      join(all.agent, c.listen.agent);
      join(all.pub, c.listen.pub);
      join(all.operator_, c.listen.operator_);
      join(all.http, c.listen.http);
      std::filesystem::create_directories(dir() + "/coordinator-" + std::to_string(k + 1));
      ha_.push_back(std::move(c));
    }
    endpoints_ = all;
  }
  for (int i = 0; i < size(); ++i) {
    std::filesystem::create_directories(agent_dir(i) + "/state");
    std::filesystem::create_directories(root(i));
  }
  if (secure()) make_keys();
}

// Keys made the way a user makes them: with the programs' keygen commands.
void Fleet::make_keys() {
  std::filesystem::create_directories(keys_dir());
  std::vector<std::vector<std::string>> cmds = {
      {bin_dir() + "/coordinator/gantry-coordinator", "keygen", "--out", keys_dir() + "/coordinator"},
      {bin_dir() + "/cli/gantry", "keygen", "--out", keys_dir() + "/admin"},
      {bin_dir() + "/cli/gantry", "release", "keygen", "--out", keys_dir() + "/release"},
  };
  for (int i = 0; i < size(); ++i)
    cmds.push_back({bin_dir() + "/agent/gantry-agent", "keygen", "--out", agent_key_prefix(i)});
  for (const auto& c : cmds) {
    const auto r = run(c, 30000);
    if (r.exit_code != 0) throw std::runtime_error("Fleet: " + c[0] + " keygen failed: " + r.err + r.out);
  }
}

Fleet::~Fleet() { cleanup(); }

void Fleet::cleanup() noexcept {
  try {
    for (auto& a : agents_) a.process.kill_and_reap();
    coordinator_.kill_and_reap();
    for (auto& c : ha_) c.process.kill_and_reap();
    for (int i = 0; i < size(); ++i) {
      run({source_dir() + "/demo/stop-service", root(i)}, 15000);
      if (const auto pid = service_pid(i)) ::kill(*pid, SIGKILL);
    }
    // Anything else still mentioning our dir (e.g. a restart script the agent had in flight
    // when it was killed, which may start a service after the sweep): sweep twice.
    for (int pass = 0; pass < 2; ++pass) {
      if (kill_processes_mentioning(dir() + "/") == 0 && pass == 0) break;
      sleep_ms(200);
    }
  } catch (const std::exception& e) {
    std::cerr << "[gantry-test] fleet cleanup: " << e.what() << "\n";
  }
}

const AgentSpec& Fleet::spec(int i) const {
  check_index(i);
  return agents_[static_cast<size_t>(i)].spec;
}

void Fleet::check_index(int i) const {
  if (i < 0 || i >= size()) {
    throw std::out_of_range("Fleet: agent index " + std::to_string(i) + " out of range [0, " + std::to_string(size()) +
                            ")");
  }
}

std::string Fleet::agent_dir(int i) const {
  check_index(i);
  return dir() + "/agent-" + std::to_string(i + 1);
}
std::string Fleet::root(int i) const { return agent_dir(i) + "/demo"; }
int Fleet::port(int i) const {
  check_index(i);
  return agents_[static_cast<size_t>(i)].port;
}
std::string Fleet::state_dir() const { return dir() + "/coordinator"; }
std::string Fleet::agent_config_path(int i) const { return agent_dir(i) + "/agent.conf"; }
pid_t Fleet::agent_pid(int i) const {
  check_index(i);
  return agents_[static_cast<size_t>(i)].process.pid();
}

// ----- coordinator

// The coordinator's command line, in one place.
std::vector<std::string> Fleet::coordinator_argv(const CoordinatorEndpoints& listen) const {
  std::vector<std::string> argv = {
      options_.coordinator_binary.empty() ? bin_dir() + "/coordinator/gantry-coordinator" : options_.coordinator_binary,
      "--state-dir",
      state_dir(),
      "--agent-endpoint",
      listen.agent,
      "--pub-endpoint",
      listen.pub,
      "--operator-endpoint",
      listen.operator_,
      "--http-address",
      listen.http,
      "--heartbeat-interval-ms",
      std::to_string(options_.heartbeat_interval_ms),
      "--heartbeat-misses",
      std::to_string(options_.heartbeat_misses),
      "--restart-grace-ms",
      std::to_string(options_.restart_grace_ms),
  };
  if (secure()) {
    argv.insert(argv.end(),
                {"--server-key", keys_dir() + "/coordinator.key", "--admin-key", "admin=" + keys_dir() + "/admin.pub"});
    if (options_.enroll_agents) {
      for (int i = 0; i < size(); ++i)
        argv.insert(argv.end(), {"--accept-agent-key", host_id(i) + "=" + agent_key_prefix(i) + ".pub"});
    }
  } else {
    argv.push_back("--insecure-dev");
  }
  argv.insert(argv.end(), options_.coordinator_extra_args.begin(), options_.coordinator_extra_args.end());
  return argv;
}

void Fleet::launch_coordinator(const CoordinatorEndpoints& listen) {
  if (coordinator_.alive()) throw std::logic_error("Fleet: coordinator already running");
  const std::string endpoints_file = state_dir() + "/endpoints.json";
  std::filesystem::remove(endpoints_file);  // so we wait for this run's file, not the last one
  coordinator_ = Process(coordinator_argv(listen), dir() + "/coordinator.log");
  std::optional<CoordinatorEndpoints> ep;
  const bool up = wait_until(
      [&] {
        ep = read_endpoints(endpoints_file);
        return ep.has_value() || !coordinator_.alive();
      },
      options_.coordinator_start_timeout_ms);
  if (!up || !ep) {
    const auto status = coordinator_.wait_exit(0);
    const std::string why =
        !up ? "no endpoints.json within " + std::to_string(options_.coordinator_start_timeout_ms) + " ms"
            : "it exited with status " + std::to_string(status.value_or(-1));
    coordinator_.kill_and_reap();
    throw std::runtime_error("Fleet: coordinator did not start (" + why + "); log:\n" + tail(coordinator_log(), 8192));
  }
  endpoints_ = *ep;
}

void Fleet::start_coordinator() {
  if (!ha_.empty()) {
    for (int k = 0; k < coordinator_count(); ++k)
      if (!coordinator_running_at(k)) start_coordinator_at(k);
    if (leader(options_.coordinator_start_timeout_ms) < 0) {
      std::string logs;
      for (int k = 0; k < coordinator_count(); ++k)
        logs += "----- coordinator-" + std::to_string(k + 1) + ".log -----\n" + tail(coordinator_log_at(k), 4096);
      throw std::runtime_error("Fleet: no coordinator became the leader within " +
                               std::to_string(options_.coordinator_start_timeout_ms) + " ms\n" + logs);
    }
    return;
  }
  if (endpoints_) {
    // Started before in this fleet: come back where the agents expect it.
    launch_coordinator(*endpoints_);
    return;
  }
  // Ports of our choosing, none of them an agent's demo-service port. A coordinator bound to
  // "any free port" could be given one of those (free until that service first starts), and
  // the service would then fail to bind it (seen once: a health probe answered by the
  // coordinator's PUB socket). A port taken by another test between the pick and the bind
  // makes the coordinator exit on "Address already in use": pick again, a bounded few times.
  const std::string host = options_.ipv6 ? "tcp://[::1]:" : "tcp://127.0.0.1:";
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    // free_tcp_port never hands out a port twice in this process: none is an agent's.
    const auto pick = [] { return std::to_string(free_tcp_port()); };
    const CoordinatorEndpoints listen{host + pick(), host + pick(), host + pick(), "127.0.0.1:" + pick()};
    try {
      launch_coordinator(listen);
      return;
    } catch (const std::runtime_error& e) {
      if (attempt == kAttempts || std::string(e.what()).find("Address already in use") == std::string::npos) throw;
    }
  }
}

void Fleet::restart_coordinator() {
  if (!endpoints_) throw std::logic_error("Fleet: restart_coordinator before start_coordinator");
  kill_coordinator(SIGKILL);
  launch_coordinator(*endpoints_);
}

std::optional<int> Fleet::kill_coordinator(int sig) { return stop_process(coordinator_, sig); }

std::vector<std::string> Fleet::coordinator_argv_at(int k) const {
  std::vector<std::string> argv = coordinator_argv(ha_.at(static_cast<size_t>(k)).listen);
  const std::string own = dir() + "/coordinator-" + std::to_string(k + 1);
  for (size_t i = 0; i + 1 < argv.size(); ++i)
    if (argv[i] == "--state-dir") argv[i + 1] = own;
  argv.insert(argv.end(), {"--name", "c" + std::to_string(k + 1)});
  if (!options_.store.empty()) argv.insert(argv.end(), {"--store", options_.store});
  return argv;
}

void Fleet::start_coordinator_at(int k) {
  auto& c = ha_.at(static_cast<size_t>(k));
  if (c.process.alive()) throw std::logic_error("Fleet: coordinator " + std::to_string(k + 1) + " already running");
  c.process = Process(coordinator_argv_at(k), dir() + "/coordinator-" + std::to_string(k + 1) + ".log");
}

std::optional<int> Fleet::kill_coordinator_at(int k, int sig) {
  return stop_process(ha_.at(static_cast<size_t>(k)).process, sig);
}

bool Fleet::coordinator_running_at(int k) { return ha_.at(static_cast<size_t>(k)).process.alive(); }

pid_t Fleet::coordinator_pid_at(int k) const { return ha_.at(static_cast<size_t>(k)).process.pid(); }

const CoordinatorEndpoints& Fleet::endpoints_at(int k) const { return ha_.at(static_cast<size_t>(k)).listen; }

nlohmann::json Fleet::coordinator_status_at(int k) {
  const std::string& http = ha_.at(static_cast<size_t>(k)).listen.http;
  const auto r = http_get(std::stoi(http.substr(http.rfind(':') + 1)), "/status", 2000);
  if (!r || r->status != 200) return nlohmann::json();
  try {
    return nlohmann::json::parse(r->body);
  } catch (const std::exception&) {
    return nlohmann::json();
  }
}

int Fleet::leader(int timeout_ms) {
  int found = -1;
  wait_until(
      [&] {
        for (int k = 0; k < coordinator_count(); ++k) {
          if (!coordinator_running_at(k)) continue;
          const auto st = coordinator_status_at(k);
          if (st.is_object() && st.value("role", "") == "leader") {
            found = k;
            return true;
          }
        }
        return false;
      },
      timeout_ms, 50);
  return found;
}

std::string Fleet::coordinator_log_at(int k) const {
  return read_file(dir() + "/coordinator-" + std::to_string(k + 1) + ".log");
}

bool Fleet::coordinator_running() { return coordinator_.alive(); }

const CoordinatorEndpoints& Fleet::endpoints() const {
  if (!endpoints_) throw std::logic_error("Fleet: coordinator endpoints unknown (not started)");
  return *endpoints_;
}

// ----- agents

std::string Fleet::write_agent_config(int i) {
  check_index(i);
  const auto& agent = agents_[static_cast<size_t>(i)];
  const auto& ep = endpoints();
  std::ostringstream c;
  c << "host_id = " << agent.spec.host_id << "\n"
    << "coordinator = " << ep.agent << "\n"
    << "coordinator_pub = " << ep.pub << "\n"
    << "state_dir = " << agent_dir(i) << "/state\n";
  if (secure()) {
    c << "agent_key = " << agent_key_prefix(i) << ".key\n"
      << "coordinator_key = " << keys_dir() << "/coordinator.pub\n"
      << "release_public_key = " << keys_dir() << "/release.pub\n";
  } else {
    c << "insecure_dev = true\n";
  }
  c << "heartbeat_interval_ms = " << options_.heartbeat_interval_ms << "\n";
  for (const auto& [k, v] : agent.spec.labels) c << "label = " << k << "=" << v << "\n";
  for (const auto& line : options_.agent_extra_config_lines) c << line << "\n";
  if (options_.service_section) {
    c << "\n[service.demo]\n" << options_.service_section(i, agent.port, root(i)) << "\n";
  } else {
    c << "\n[service.demo]\n"
      << "driver = binary\n"
      << "root = " << root(i) << "\n"
      << "restart_command = " << source_dir() << "/demo/restart-service " << root(i) << " " << agent.port << "\n"
      << "http_probe = http://127.0.0.1:" << agent.port << "/health\n"
      << "min_healthy_ms = " << options_.min_healthy_ms << "\n"
      << "healthy_deadline_ms = " << options_.healthy_deadline_ms << "\n"
      << "probe_interval_ms = " << options_.probe_interval_ms << "\n";
  }
  const std::string path = agent_config_path(i);
  std::ofstream out(path, std::ios::trunc);
  out << c.str();
  out.close();
  if (!out) throw std::runtime_error("Fleet: cannot write " + path);
  return path;
}

void Fleet::start_agent(int i, const std::map<std::string, std::string>& extra_env) {
  check_index(i);
  auto& agent = agents_[static_cast<size_t>(i)];
  if (agent.process.alive()) {
    throw std::logic_error("Fleet: agent " + agent.spec.host_id + " already running");
  }
  agent.env = extra_env;
  const std::string config = write_agent_config(i);
  const std::string program = options_.agent_binary.empty() ? bin_dir() + "/agent/gantry-agent" : options_.agent_binary;
  agent.process = Process({program, "--config", config}, agent_dir(i) + "/agent.log", agent.env);
}

void Fleet::start_all_agents() {
  for (int i = 0; i < size(); ++i) start_agent(i);
}

std::optional<int> Fleet::kill_agent(int i, int sig) {
  check_index(i);
  return stop_process(agents_[static_cast<size_t>(i)].process, sig);
}

void Fleet::restart_agent(int i) {
  check_index(i);
  kill_agent(i, SIGKILL);
  const auto env = agents_[static_cast<size_t>(i)].env;
  start_agent(i, env);
}

bool Fleet::agent_running(int i) {
  check_index(i);
  return agents_[static_cast<size_t>(i)].process.alive();
}

// ----- releases, CLI, observations

std::string Fleet::make_release(const std::string& version, const std::string& behaviour) {
  const std::string out = dir() + "/releases/" + version + "-" + behaviour + ".tar";
  const auto r = run({source_dir() + "/scripts/make-demo-release", "--version", version, "--behaviour", behaviour,
                      "--out", out, "--binary", bin_dir() + "/demo/gantry-demo-service"},
                     60000);
  if (r.exit_code != 0) {
    throw std::runtime_error("Fleet: make-demo-release failed (" + std::to_string(r.exit_code) + "): " + r.err + r.out);
  }
  if (secure()) {
    // Signed as a release manager would, with the offline release key: out.manifest + out.sig.
    const auto s = run({bin_dir() + "/cli/gantry", "release", "sign", "--key", keys_dir() + "/release.key", out,
                        "--service", "demo", "--version", version},
                       30000);
    if (s.exit_code != 0) throw std::runtime_error("Fleet: gantry release sign failed: " + s.err + s.out);
  }
  return out;
}

CmdResult Fleet::cli(const std::vector<std::string>& args, int timeout_ms) {
  return cli_as(secure() ? keys_dir() + "/admin.key" : "", args, timeout_ms);
}

CmdResult Fleet::cli_as(const std::string& key_file, const std::vector<std::string>& args, int timeout_ms) {
  std::vector<std::string> argv = {bin_dir() + "/cli/gantry", "--coordinator", endpoints().operator_};
  if (!key_file.empty())
    argv.insert(argv.end(), {"--key", key_file, "--coordinator-key", keys_dir() + "/coordinator.pub"});
  argv.insert(argv.end(), args.begin(), args.end());
  // The fleet's keys are explicit; nothing from the caller's environment may override them.
  return run(argv, timeout_ms, {{"GANTRY_KEY", ""}, {"GANTRY_COORDINATOR_KEY", ""}});
}

std::optional<std::string> Fleet::served_version(int i) {
  const auto r = http_get(port(i), "/");
  if (!r || r->status != 200) return std::nullopt;
  const auto at = r->body.find("version=");
  if (at == std::string::npos) return std::nullopt;
  const auto begin = at + 8;
  const auto end = r->body.find_first_of(" \t\r\n", begin);
  return r->body.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

std::optional<pid_t> Fleet::service_pid(int i) const {
  const std::string text = read_file(root(i) + "/service.pid");
  char* end = nullptr;
  const long pid = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || pid <= 0 || !pid_running(static_cast<pid_t>(pid))) {
    return std::nullopt;
  }
  // Only ours: the pid may have been reused since the pidfile was written.
  if (proc_cmdline(static_cast<pid_t>(pid)).find(root(i) + "/") == std::string::npos) {
    return std::nullopt;
  }
  return static_cast<pid_t>(pid);
}

std::string Fleet::agent_log(int i) const { return read_file(agent_dir(i) + "/agent.log"); }
std::string Fleet::coordinator_log() const { return read_file(dir() + "/coordinator.log"); }
std::string Fleet::service_log(int i) const { return read_file(root(i) + "/service.log"); }

std::string Fleet::diagnostics(size_t max_bytes_per_log) const {
  std::ostringstream d;
  d << "\n===== fleet " << dir() << " =====\n";
  d << "----- coordinator.log -----\n" << tail(coordinator_log(), max_bytes_per_log) << "\n";
  for (int k = 0; k < static_cast<int>(ha_.size()); ++k)
    d << "----- coordinator-" << k + 1 << ".log -----\n" << tail(coordinator_log_at(k), max_bytes_per_log) << "\n";
  for (int i = 0; i < size(); ++i) {
    d << "----- " << host_id(i) << " agent.log -----\n" << tail(agent_log(i), max_bytes_per_log) << "\n";
    d << "----- " << host_id(i) << " service.log (port " << port(i) << ") -----\n"
      << tail(service_log(i), max_bytes_per_log) << "\n";
  }
  return d.str();
}

}  // namespace gantry::testing
