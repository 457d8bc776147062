// gantry-swap-floor: the floor of an agent's local swap (bench/run footprint, figure 5).
//
// Does, N times, only the steps no agent can avoid when it switches a service to an installed
// release and proves it healthy, each timed on its own (steady clock, microseconds):
//   swap       symlink("releases/<v>", ROOT/current.tmp) + rename(2) it over ROOT/current
//   dir_fsync  fsync(2) of ROOT, so the rename survives a crash
//   restart    fork + exec `/bin/sh -c RESTART_COMMAND` + waitpid (the agent's contract: a shell command)
//   probe      one HTTP/1.0 GET of PROBE_URL on a fresh loopback connection, answered 200
// alternating between two release dirs it creates under ROOT/releases. Prints one JSON line
// with every sample. Bounded: --runs at most 10,000, each restart and probe at most 10 s.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

namespace po = boost::program_options;

namespace {

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

[[noreturn]] void die(const std::string& what) {
  std::cerr << "gantry-swap-floor: " << what << ": " << std::strerror(errno) << "\n";
  std::exit(1);
}

// fork + exec /bin/sh -c cmd, wait for it; the exit code (or -1 on timeout, the group killed).
int run_shell(const std::string& cmd) {
  pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    ::setpgid(0, 0);
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    ::execv("/bin/sh", const_cast<char* const*>(argv));
    _exit(127);
  }
  int status = 0;
  const int64_t deadline = now_us() + 10'000'000;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, now_us() < deadline ? 0 : WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) die("waitpid");
    if (now_us() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// One GET on a fresh connection; true iff the status is 200.
bool http_get(const sockaddr_in& addr, const std::string& host, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      std::string resp;
      char buf[4096];
      for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        resp.append(buf, static_cast<size_t>(n));
        if (resp.size() > 65536) break;
      }
      ok = resp.rfind("HTTP/", 0) == 0 && resp.find(' ') != std::string::npos &&
           resp.compare(resp.find(' ') + 1, 3, "200") == 0;
    }
  }
  ::close(fd);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc("gantry-swap-floor: the unavoidable steps of a local swap, timed (bench/run footprint)");
  std::string root, cmd, url;
  int runs = 20, warmup = 1;
  desc.add_options()("help", "this text")("root", po::value(&root)->required(), "scratch install root (created)")(
      "restart-command", po::value(&cmd)->required(), "run as /bin/sh -c COMMAND")(
      "probe-url", po::value(&url)->required(), "http://127.0.0.1:PORT/PATH")(
      "runs", po::value(&runs), "timed iterations")("warmup", po::value(&warmup), "untimed iterations first");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "gantry-swap-floor: " << e.what() << "\n";
    return 2;
  }
  if (runs < 1 || runs > 10000 || warmup < 0 || warmup > 100) {
    std::cerr << "gantry-swap-floor: --runs 1..10000, --warmup 0..100\n";
    return 2;
  }
  // http://HOST:PORT/PATH, numeric IPv4 only (the bench probes 127.0.0.1).
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) {
    std::cerr << "gantry-swap-floor: --probe-url must be http://IP:PORT/PATH\n";
    return 2;
  }
  std::string rest = url.substr(scheme.size());
  std::string authority = rest.substr(0, rest.find('/'));
  std::string path = rest.find('/') == std::string::npos ? "/" : rest.substr(rest.find('/'));
  std::string host = authority.substr(0, authority.rfind(':'));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(authority.substr(authority.rfind(':') + 1))));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    std::cerr << "gantry-swap-floor: --probe-url host must be a numeric IPv4 address\n";
    return 2;
  }

  for (const std::string& d : {root, root + "/releases", root + "/releases/a", root + "/releases/b"})
    if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) die("mkdir " + d);
  int dfd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) die("open " + root);
  const std::string link = root + "/current", tmp = root + "/current.tmp";

  std::vector<int64_t> swap, dsync, restart, probe, total;
  for (int i = 0; i < warmup + runs; ++i) {
    const char* target = i % 2 ? "releases/b" : "releases/a";
    int64_t t0 = now_us();
    ::unlink(tmp.c_str());
    if (::symlink(target, tmp.c_str()) != 0) die("symlink " + tmp);
    if (::rename(tmp.c_str(), link.c_str()) != 0) die("rename " + tmp);
    int64_t t1 = now_us();
    if (::fsync(dfd) != 0) die("fsync " + root);
    int64_t t2 = now_us();
    int rc = run_shell(cmd);
    int64_t t3 = now_us();
    bool healthy = http_get(addr, host, path);
    int64_t t4 = now_us();
    if (rc != 0 || !healthy) {
      std::cerr << "gantry-swap-floor: restart exited " << rc << ", probe " << (healthy ? "ok" : "failed") << "\n";
      return 1;
    }
    if (i < warmup) continue;
    swap.push_back(t1 - t0);
    dsync.push_back(t2 - t1);
    restart.push_back(t3 - t2);
    probe.push_back(t4 - t3);
    total.push_back(t4 - t0);
  }
  ::close(dfd);
  nlohmann::json j = {{"ev", "swap-floor"},    {"runs", runs},      {"swap_us", swap},  {"dir_fsync_us", dsync},
                      {"restart_us", restart}, {"probe_us", probe}, {"total_us", total}};
  std::cout << j.dump() << std::endl;
  return 0;
}
