#include "tests/support/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace gantry::testing {

namespace {

constexpr int kIpTimeoutMs = 20000;

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// Names of all namespaces (`ip netns list` prints "name" or "name (id: N)").
std::vector<std::string> list_namespaces() {
  std::vector<std::string> out;
  const auto r = run({"ip", "netns", "list"}, kIpTimeoutMs);
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    auto words = split_words(line);
    if (!words.empty()) out.push_back(words[0]);
  }
  return out;
}

// SIGKILLs every process inside namespace `ns`, then deletes it. Bounded; never throws.
void delete_namespace(const std::string& ns) noexcept {
  try {
    for (int pass = 0; pass < 5; ++pass) {
      const auto pids = split_words(run({"ip", "netns", "pids", ns}, kIpTimeoutMs).out);
      if (pids.empty()) break;
      for (const auto& p : pids) {
        const long pid = std::strtol(p.c_str(), nullptr, 10);
        if (pid > 1 && pid != ::getpid()) ::kill(static_cast<pid_t>(pid), SIGKILL);
      }
      wait_until([&] { return split_words(run({"ip", "netns", "pids", ns}, kIpTimeoutMs).out).empty(); }, 2000, 50);
    }
    const auto r = run({"ip", "netns", "del", ns}, kIpTimeoutMs);
    if (r.exit_code != 0) std::cerr << "[netns] ip netns del " << ns << ": " << r.err << "\n";
  } catch (const std::exception& e) {
    std::cerr << "[netns] removing " << ns << ": " << e.what() << "\n";
  }
}

std::atomic<int> g_serial{0};

}  // namespace

std::string netns_unavailable_reason() {
  if (::geteuid() != 0)
    return "network namespaces need root (this test runs as uid " + std::to_string(::geteuid()) + ")";
  const auto r = run({"ip", "netns", "list"}, kIpTimeoutMs);
  if (r.exit_code != 0) {
    return "`ip netns` is not available (exit " + std::to_string(r.exit_code) + "): " + r.err +
           " — install iproute2 (scripts/install-deps)";
  }
  // Try for real: some sandboxes refuse unshare/mount even to root.
  const std::string probe = "gtst-probe-" + std::to_string(::getpid());
  const auto add = run({"ip", "netns", "add", probe}, kIpTimeoutMs);
  if (add.exit_code != 0) return "cannot create a network namespace: " + add.err;
  delete_namespace(probe);
  return "";
}

int sweep_stale_namespaces(const std::string& prefix) {
  int removed = 0;
  for (const auto& ns : list_namespaces()) {
    if (ns.rfind(prefix, 0) != 0) continue;
    const std::string rest = ns.substr(prefix.size());
    char* end = nullptr;
    const long pid = std::strtol(rest.c_str(), &end, 10);
    if (end == rest.c_str() || *end != '-' || pid <= 0) continue;
    if (pid == ::getpid() || pid_running(static_cast<pid_t>(pid))) continue;
    std::cerr << "[netns] removing stale namespace " << ns << " (its creator, pid " << pid << ", is gone)\n";
    delete_namespace(ns);
    ++removed;
  }
  return removed;
}

NetnsLab::NetnsLab(int n, const std::string& prefix) {
  if (n < 1 || n > 250) throw std::invalid_argument("NetnsLab: 1..250 namespaces");
  sweep_stale_namespaces(prefix);
  base_ = prefix + std::to_string(::getpid()) + "-" + std::to_string(g_serial++) + "-";
  bridge_ = base_ + "br";
  try {
    ip({"netns", "add", bridge_});
    ip({"-n", bridge_, "link", "set", "lo", "up"});
    ip({"-n", bridge_, "link", "add", "br0", "type", "bridge"});
    ip({"-n", bridge_, "link", "set", "br0", "up"});
    for (int i = 0; i < n; ++i) {
      const std::string ns = base_ + std::to_string(i);
      ip({"netns", "add", ns});
      names_.push_back(ns);
      const std::string port = "p" + std::to_string(i);
      // Both ends are made inside namespaces, so interface names never clash with other labs.
      ip({"-n", bridge_, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns});
      ip({"-n", bridge_, "link", "set", port, "master", "br0"});
      ip({"-n", bridge_, "link", "set", port, "up"});
      ip({"-n", ns, "link", "set", "lo", "up"});
      ip({"-n", ns, "addr", "add", address(i) + "/16", "dev", "eth0"});
      ip({"-n", ns, "link", "set", "eth0", "up"});
    }
  } catch (...) {
    remove_all();
    throw;
  }
}

NetnsLab::~NetnsLab() { remove_all(); }

void NetnsLab::remove_all() noexcept {
  for (auto it = names_.rbegin(); it != names_.rend(); ++it) delete_namespace(*it);
  names_.clear();
  if (!bridge_.empty()) delete_namespace(bridge_);
  bridge_.clear();
}

void NetnsLab::ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run(argv, kIpTimeoutMs);
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error("NetnsLab: `" + cmd + "` failed (" + std::to_string(r.exit_code) + "): " + r.err + r.out);
  }
}

void NetnsLab::check(int i) const {
  if (i < 0 || i >= size()) throw std::out_of_range("NetnsLab: member " + std::to_string(i));
}

const std::string& NetnsLab::name(int i) const {
  check(i);
  return names_[static_cast<size_t>(i)];
}

std::string NetnsLab::address(int i) const {
  return "198.18." + std::to_string((i + 1) / 256) + "." + std::to_string((i + 1) % 256);
}

std::vector<std::string> NetnsLab::wrap(int i, const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", name(i)};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

void NetnsLab::link_down(int i) {
  check(i);
  ip({"-n", bridge_, "link", "set", "p" + std::to_string(i), "down"});
}

void NetnsLab::link_up(int i) {
  check(i);
  ip({"-n", bridge_, "link", "set", "p" + std::to_string(i), "up"});
}

std::optional<HttpResult> NetnsLab::http_get(int i, int port, const std::string& path, int timeout_ms) const {
  const std::string file = "/var/run/netns/" + name(i);
  std::optional<HttpResult> result;
  // setns() moves only the calling thread; the socket made there stays in that namespace.
  std::thread t([&] {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    const bool in = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    if (in) result = gantry::testing::http_get(port, path, timeout_ms);
  });
  t.join();
  return result;
}

}  // namespace gantry::testing
