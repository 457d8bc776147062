#include "tests/support/haproxy.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace gantry::testing {

std::string haproxy_binary() {
  for (const char* p : {"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

Haproxy::Haproxy(const std::string& dir, const std::vector<int>& server_ports, HaproxyOptions o)
    : dir_(dir), socket_(dir + "/admin.sock"), servers_(server_ports.size()) {
  for (size_t i = 0; i < server_ports.size(); ++i)
    names_.push_back(i < o.server_names.size() ? o.server_names[i] : server(static_cast<int>(i)));
  const std::string bin = haproxy_binary();
  if (bin.empty()) throw std::runtime_error("haproxy is not installed (apt-get install haproxy)");
  port_ = free_tcp_port();  // HAProxy cannot bind port 0 and report it: a port free a moment ago
  std::ostringstream c;
  c << "global\n"
    << "  stats socket " << socket_ << " mode 600 level admin\n"
    << "  maxconn 4000\n"
    << "defaults\n"
    << "  mode http\n"
    << "  timeout connect 2s\n"
    << "  timeout client 30s\n"
    << "  timeout server 30s\n"
    << "  retries " << o.retries << "\n"
    << "frontend fe\n"
    << "  bind 127.0.0.1:" << port_ << "\n"
    << "  default_backend " << backend() << "\n"
    << "backend " << backend() << "\n"
    << "  balance roundrobin\n"
    << "  option httpchk GET " << o.health_path << "\n"
    << "  default-server inter " << o.check_inter_ms << " fall " << o.fall << " rise " << o.rise << "\n";
  for (size_t i = 0; i < server_ports.size(); ++i)
    c << "  server " << names_[i] << " 127.0.0.1:" << server_ports[i] << " check\n";
  std::ofstream(dir + "/haproxy.cfg") << c.str();
  process_ = Process({bin, "-f", dir + "/haproxy.cfg", "-db"}, dir + "/haproxy.log");
  if (!wait_until([&] { return command("show info").has_value() || !process_.alive(); }, 10000) || !process_.alive())
    throw std::runtime_error("haproxy did not start:\n" + log());
}

Haproxy::~Haproxy() { process_.kill_and_reap(); }

std::string Haproxy::log() const { return read_file(dir_ + "/haproxy.log"); }

std::optional<std::string> Haproxy::command(const std::string& line) const {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", socket_.c_str());
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  std::string out = line + "\n";
  if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
    ::close(fd);
    return std::nullopt;
  }
  std::string answer;
  char buf[8192];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return answer;
}

std::string Haproxy::status(int i) const {
  return i >= 0 && static_cast<size_t>(i) < names_.size() ? status_of(names_[static_cast<size_t>(i)]) : "";
}

std::string Haproxy::status_of(const std::string& name) const {
  auto a = command("show stat " + backend() + " 4 -1");
  if (!a) return "";
  std::istringstream in(*a);
  std::string header;
  std::getline(in, header);
  if (header.rfind("# ", 0) != 0) return "";
  auto split = [](const std::string& s) {
    std::vector<std::string> f;
    std::stringstream ss(s);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    return f;
  };
  auto names = split(header.substr(2));
  size_t sv = 0, st = 0;
  for (size_t k = 0; k < names.size(); ++k) {
    if (names[k] == "svname") sv = k;
    if (names[k] == "status") st = k;
  }
  for (std::string line; std::getline(in, line);) {
    auto f = split(line);
    if (f.size() > std::max(sv, st) && f[sv] == name) return f[st];
  }
  return "";
}

bool Haproxy::wait_all_up(int timeout_ms) const {
  return wait_until(
      [&] {
        for (size_t i = 0; i < servers_; ++i)
          if (status(static_cast<int>(i)) != "UP") return false;
        return true;
      },
      timeout_ms, 100);
}

}  // namespace gantry::testing
