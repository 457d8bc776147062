#include "common/util/process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstring>

#include <algorithm>
#include <vector>

namespace gantry {

namespace {
constexpr size_t kMaxOutput = 64 * 1024;

void keep_tail(std::string& out) {
  if (out.size() > kMaxOutput) out.erase(0, out.size() - kMaxOutput);
}

// The environment of a child: ours, with `env` set over it.
std::vector<std::string> child_env(const std::map<std::string, std::string>& env) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    std::string s(*e);
    auto eq = s.find('=');
    if (eq != std::string::npos && env.count(s.substr(0, eq))) continue;
    out.push_back(std::move(s));
  }
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

struct Child {
  pid_t pid = -1;
  int out = -1;  // read end of its stdout+stderr
};

// `/bin/sh -c script` in its own process group, stdout+stderr into a pipe, stdin /dev/null, no
// blocked signals; `fd3` (if >= 0) becomes its fd 3.
//
// posix_spawn (a vfork-style clone in glibc) instead of fork(): no copy of the caller's page
// tables, which a multi-threaded daemon would pay on every restart.
Expected<Child> spawn_shell(const std::string& script, const std::map<std::string, std::string>& env, int fd3) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return make_error("io", std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> env_strings = child_env(env);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (fd3 >= 0) posix_spawn_file_actions_adddup2(&fa, fd3, 3);  // same fd: glibc clears its FD_CLOEXEC
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, "/bin/sh", &fa, &attr, const_cast<char* const*>(argv), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    return make_error("spawn", std::string("spawn /bin/sh: ") + std::strerror(rc));
  }
  ::setpgid(pid, pid);
  ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
  return Child{pid, pipefd[0]};
}

// Waits for `c` to exit, collecting its output; kills its process group at `deadline`. Closes c.out.
ProcessResult wait_child(const Child& c, Millis deadline) {
  // A pidfd turns readable when the child exits, so the loop sleeps in poll() until output,
  // exit or the deadline instead of polling waitpid on a timer (which added up to 5-20 ms to
  // every restart). Without pidfd support (Linux < 5.3) it falls back to that timer.
  const pid_t pid = c.pid;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  ProcessResult res;
  SystemClock clock;
  int status = 0;
  bool exited = false;
  bool pipe_open = true;
  char buf[4096];
  while (!exited) {
    Millis left = deadline - clock.now_ms();
    if (left <= 0 && !res.timed_out) {
      res.timed_out = true;
      ::kill(-pid, SIGKILL);
    }
    pollfd pfds[2];
    nfds_t n = 0;
    if (pipe_open) pfds[n++] = {c.out, POLLIN, 0};
    if (pidfd >= 0) pfds[n++] = {pidfd, POLLIN, 0};
    int wait_ms = pidfd < 0 ? (pipe_open ? 20 : 5) : static_cast<int>(std::clamp<Millis>(left, 1, 1000));
    if (res.timed_out) wait_ms = std::min(wait_ms, 20);
    if (n > 0)
      ::poll(pfds, n, wait_ms);
    else
      ::usleep(static_cast<useconds_t>(wait_ms) * 1000);
    while (pipe_open) {
      ssize_t got = ::read(c.out, buf, sizeof buf);
      if (got > 0) {
        res.output.append(buf, static_cast<size_t>(got));
        keep_tail(res.output);
        continue;
      }
      if (got == 0) pipe_open = false;
      break;
    }
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) exited = true;
  }
  if (pidfd >= 0) ::close(pidfd);
  // Drain what is already buffered, without waiting for daemons that inherited the pipe.
  for (;;) {
    ssize_t n = ::read(c.out, buf, sizeof buf);
    if (n <= 0) break;
    res.output.append(buf, static_cast<size_t>(n));
    keep_tail(res.output);
  }
  ::close(c.out);
  if (WIFEXITED(status))
    res.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    res.exit_code = 128 + WTERMSIG(status);
  return res;
}

// The default prepare_shell(): nothing ahead of time.
class DeferredShell final : public PreparedShell {
 public:
  DeferredShell(ProcessRunner& runner, std::string command, std::map<std::string, std::string> env, Millis timeout_ms)
      : runner_(runner), command_(std::move(command)), env_(std::move(env)), timeout_ms_(timeout_ms) {}
  void start() override {}
  Expected<ProcessResult> wait() override { return runner_.run_shell(command_, env_, timeout_ms_); }

 private:
  ProcessRunner& runner_;
  std::string command_;
  std::map<std::string, std::string> env_;
  Millis timeout_ms_;
};

// The shell's own script while it waits for start(): one line "go" on fd 3, then fd 3 closed and
// the command evaluated (the variable that carried it unset first; `shift` drops the positional
// parameter that held it, so the command sees none, as under `sh -c`). Anything else on fd 3 —
// the end of the stream because the caller dropped it or died — exits 125 with nothing run.
constexpr const char* kGateVar = "GANTRY_GATED_COMMAND";
constexpr const char* kGateScript =
    "IFS= read -r gantry_gate <&3 && [ \"$gantry_gate\" = go ] || exit 125\n"
    "exec 3<&-\n"
    "unset gantry_gate\n"
    "set -- \"$GANTRY_GATED_COMMAND\"\n"
    "unset GANTRY_GATED_COMMAND\n"
    "eval \"shift; $1\"\n";

class GatedShell final : public PreparedShell {
 public:
  GatedShell(const std::string& command, std::map<std::string, std::string> env, Millis timeout_ms)
      : timeout_ms_(timeout_ms) {
    int sv[2];
    // A socket pair rather than a pipe: send(MSG_NOSIGNAL) to a shell that already died
    // fails instead of raising SIGPIPE in the caller.
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      child_ = make_error("io", std::string("socketpair: ") + std::strerror(errno));
      return;
    }
    env[kGateVar] = command;
    child_ = spawn_shell(kGateScript, env, sv[1]);
    ::close(sv[1]);
    if (child_)
      gate_ = sv[0];
    else
      ::close(sv[0]);
  }
  ~GatedShell() override {
    if (gate_ >= 0) ::close(gate_);
    if (!child_ || waited_) return;
    if (!started_) {
      // Never told to go: it runs nothing (it would exit 125 on its own); end it now.
      ::kill(-child_->pid, SIGKILL);
      ::waitpid(child_->pid, nullptr, 0);
    } else {
      (void)::waitpid(child_->pid, nullptr, WNOHANG);  // started, never waited for: do not block
    }
    ::close(child_->out);
  }
  void start() override {
    started_ = true;
    start_ms_ = SystemClock().now_ms();
    if (gate_ < 0) return;
    (void)::send(gate_, "go\n", 3, MSG_NOSIGNAL);  // a shell already gone shows in wait()
    ::close(gate_);
    gate_ = -1;
  }
  Expected<ProcessResult> wait() override {
    if (!child_) return child_.error();
    if (!started_ || waited_) return make_error("spawn", "prepared shell waited for before start() or twice");
    waited_ = true;
    return wait_child(*child_, start_ms_ + timeout_ms_);
  }

 private:
  Millis timeout_ms_;
  Expected<Child> child_ = make_error("spawn", "not spawned");
  int gate_ = -1;
  bool started_ = false;
  bool waited_ = false;
  Millis start_ms_ = 0;
};

}  // namespace

Expected<ProcessResult> RealProcessRunner::run_shell(const std::string& command,
                                                     const std::map<std::string, std::string>& env, Millis timeout_ms) {
  Millis deadline = SystemClock().now_ms() + timeout_ms;
  auto c = spawn_shell(command, env, -1);
  if (!c) return c.error();
  return wait_child(*c, deadline);
}

std::unique_ptr<PreparedShell> ProcessRunner::prepare_shell(const std::string& command,
                                                            const std::map<std::string, std::string>& env,
                                                            Millis timeout_ms) {
  return std::make_unique<DeferredShell>(*this, command, env, timeout_ms);
}

std::unique_ptr<PreparedShell> RealProcessRunner::prepare_shell(const std::string& command,
                                                                const std::map<std::string, std::string>& env,
                                                                Millis timeout_ms) {
  return std::make_unique<GatedShell>(command, env, timeout_ms);
}

}  // namespace gantry
