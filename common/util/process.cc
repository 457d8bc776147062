#include "common/util/process.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

namespace gantry {

namespace {
constexpr size_t kMaxOutput = 64 * 1024;

void keep_tail(std::string& out) {
  if (out.size() > kMaxOutput) out.erase(0, out.size() - kMaxOutput);
}
}  // namespace

Expected<ProcessResult> RealProcessRunner::run_shell(const std::string& command,
                                                     const std::map<std::string, std::string>& env,
                                                     Millis timeout_ms) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return make_error("io", std::string("pipe: ") + std::strerror(errno));

  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    std::string s(*e);
    auto eq = s.find('=');
    if (eq != std::string::npos && env.count(s.substr(0, eq))) continue;
    env_strings.push_back(std::move(s));
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return make_error("spawn", std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
    ::execve("/bin/sh", const_cast<char* const*>(argv), envp.data());
    _exit(127);
  }
  ::setpgid(pid, pid);
  ::close(pipefd[1]);
  ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK);

  ProcessResult res;
  SystemClock clock;
  Millis deadline = clock.now_ms() + timeout_ms;
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
    if (pipe_open) {
      pollfd pfd{pipefd[0], POLLIN, 0};
      ::poll(&pfd, 1, 20);
      for (;;) {
        ssize_t n = ::read(pipefd[0], buf, sizeof buf);
        if (n > 0) {
          res.output.append(buf, static_cast<size_t>(n));
          keep_tail(res.output);
          continue;
        }
        if (n == 0) pipe_open = false;
        break;
      }
    } else {
      ::usleep(5000);
    }
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) exited = true;
  }
  // Drain what is already buffered, without waiting for daemons that inherited the pipe.
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    res.output.append(buf, static_cast<size_t>(n));
    keep_tail(res.output);
  }
  ::close(pipefd[0]);
  if (WIFEXITED(status)) res.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) res.exit_code = 128 + WTERMSIG(status);
  return res;
}

}  // namespace gantry
