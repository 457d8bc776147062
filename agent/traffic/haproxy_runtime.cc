#include "agent/traffic/haproxy_runtime.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "common/util/clock.h"

namespace gantry::agent::traffic {
namespace {

constexpr size_t kMaxColumns = 1024;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Closes the fd at scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Waits until `fd` is ready for `events` or the deadline (steady ms) passed.
Status wait_ready(int fd, short events, Millis deadline, const char* what) {
  for (;;) {
    Millis left = deadline - SystemClock().now_ms();
    if (left <= 0) return make_error("timeout", std::string("HAProxy runtime API: timed out ") + what);
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return Status::Ok();
    if (n < 0 && errno != EINTR) return make_error("io", errno_text("poll"));
  }
}

std::vector<std::string_view> split_csv_line(std::string_view line) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (out.size() < kMaxColumns) {
    size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      out.push_back(line.substr(start));
      break;
    }
    out.push_back(line.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

// Empty (HAProxy's "not applicable") is 0; anything else must be a plain decimal.
bool parse_count(std::string_view s, uint64_t& v) {
  v = 0;
  if (s.empty()) return true;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size();
}

bool printable(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

}  // namespace

bool ServerStat::up() const { return status == "UP" || status.rfind("UP ", 0) == 0 || status == "no check"; }

Expected<HaproxyEndpoint> parse_haproxy_endpoint(const std::string& s) {
  HaproxyEndpoint e;
  std::string rest = s;
  if (rest.rfind("unix@", 0) == 0) rest = rest.substr(5);
  if (!rest.empty() && rest[0] == '/') {
    if (rest.size() >= sizeof(sockaddr_un{}.sun_path))
      return make_error("config", "HAProxy socket path too long: " + rest);
    e.unix_path = rest;
    return e;
  }
  if (rest.rfind("ipv4@", 0) == 0) rest = rest.substr(5);
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) return make_error("config", "HAProxy socket must be a unix path or IPV4:PORT: " + s);
  std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  in_addr a{};
  if (::inet_pton(AF_INET, host.c_str(), &a) != 1)
    return make_error("config", "HAProxy socket address is not numeric IPv4: " + s);
  uint32_t p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535)
    return make_error("config", "HAProxy socket port is not 1-65535: " + s);
  e.host = host;
  e.port = static_cast<uint16_t>(p);
  return e;
}

bool is_haproxy_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

Expected<ServerStat> parse_show_stat(std::string_view csv, std::string_view backend, std::string_view server) {
  auto next_line = [&csv]() -> std::string_view {
    size_t nl = csv.find('\n');
    std::string_view line = csv.substr(0, nl);
    csv = nl == std::string_view::npos ? std::string_view() : csv.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  };
  std::string_view header = next_line();
  if (header.rfind("# ", 0) != 0) {
    std::string head(header.substr(0, 120));
    if (!printable(head)) head = "(binary)";
    return make_error("haproxy", "HAProxy answered `show stat` without its CSV header: " + head);
  }
  auto names = split_csv_line(header.substr(2));
  int px = -1, sv = -1, scur = -1, qcur = -1, status = -1;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "pxname")
      px = static_cast<int>(i);
    else if (names[i] == "svname")
      sv = static_cast<int>(i);
    else if (names[i] == "scur")
      scur = static_cast<int>(i);
    else if (names[i] == "qcur")
      qcur = static_cast<int>(i);
    else if (names[i] == "status")
      status = static_cast<int>(i);
  }
  if (px < 0 || sv < 0 || scur < 0 || qcur < 0 || status < 0)
    return make_error("haproxy", "HAProxy's `show stat` header lacks pxname, svname, qcur, scur or status");
  while (!csv.empty()) {
    std::string_view line = next_line();
    if (line.empty() || line[0] == '#') continue;
    auto f = split_csv_line(line);
    if (f.size() != names.size()) continue;  // a row cut short: not ours to guess at
    if (f[px] != backend || f[sv] != server) continue;
    ServerStat st;
    if (!printable(f[status]) || f[status].size() > 64)
      return make_error("haproxy", "HAProxy reported an unreadable status");
    st.status = std::string(f[status]);
    if (!parse_count(f[scur], st.sessions) || !parse_count(f[qcur], st.queued))
      return make_error("haproxy", "HAProxy reported a malformed session count for " + std::string(backend) + "/" +
                                       std::string(server));
    return st;
  }
  return make_error("not_found", "HAProxy reports no server " + std::string(backend) + "/" + std::string(server));
}

HaproxyRuntime::HaproxyRuntime(HaproxyEndpoint endpoint, std::string backend, std::string server, Millis io_timeout_ms)
    : endpoint_(std::move(endpoint)),
      backend_(std::move(backend)),
      server_(std::move(server)),
      io_timeout_ms_(io_timeout_ms) {}

std::string HaproxyRuntime::describe() const {
  std::string where =
      endpoint_.unix_path.empty() ? endpoint_.host + ":" + std::to_string(endpoint_.port) : endpoint_.unix_path;
  return "HAProxy " + where + " server " + backend_ + "/" + server_;
}

Expected<std::string> HaproxyRuntime::command(const std::string& line) {
  const Millis deadline = SystemClock().now_ms() + io_timeout_ms_;
  Fd s;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (!endpoint_.unix_path.empty()) {
    auto* un = reinterpret_cast<sockaddr_un*>(&ss);
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, endpoint_.unix_path.c_str(), endpoint_.unix_path.size() + 1);
    len = sizeof(sockaddr_un);
    s.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(endpoint_.port);
    ::inet_pton(AF_INET, endpoint_.host.c_str(), &in->sin_addr);
    len = sizeof(sockaddr_in);
    s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  }
  if (s.fd < 0) return make_error("io", errno_text("socket"));
  if (::connect(s.fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN)
      return make_error("io", describe() + ": connect: " + std::strerror(errno));
    if (Status st = wait_ready(s.fd, POLLOUT, deadline, "connecting"); !st.ok()) return st.error();
    int err = 0;
    socklen_t el = sizeof err;
    ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) return make_error("io", describe() + ": connect: " + std::strerror(err));
  }
  std::string out = line + "\n";
  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = ::send(s.fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (Status st = wait_ready(s.fd, POLLOUT, deadline, "sending"); !st.ok()) return st.error();
    } else {
      return make_error("io", describe() + ": send: " + std::strerror(errno));
    }
  }
  // Non-interactive mode: HAProxy answers and closes.
  std::string answer;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(s.fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (answer.size() + static_cast<size_t>(n) > kMaxAnswerBytes)
        return make_error("limit", describe() + ": answer larger than " + std::to_string(kMaxAnswerBytes) + " bytes");
      answer.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return answer;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (Status st = wait_ready(s.fd, POLLIN, deadline, "reading"); !st.ok()) return st.error();
    } else {
      return make_error("io", describe() + ": recv: " + std::strerror(errno));
    }
  }
}

Status HaproxyRuntime::set_state(const char* state) {
  if (!is_haproxy_name(backend_) || !is_haproxy_name(server_))
    return make_error("config", "invalid HAProxy backend/server name " + backend_ + "/" + server_);
  auto a = command("set server " + backend_ + "/" + server_ + " state " + state);
  if (!a) return a.error();
  // Success is an empty answer; anything else is HAProxy's error text ("No such server.").
  std::string_view t = *a;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.remove_suffix(1);
  if (t.empty()) return Status::Ok();
  std::string msg(t.substr(0, 200));
  if (!printable(msg)) msg = "(unprintable answer)";
  return make_error("haproxy", describe() + ": set state " + state + " refused: " + msg);
}

Status HaproxyRuntime::drain() { return set_state("drain"); }

Status HaproxyRuntime::ready() { return set_state("ready"); }

Expected<ServerStat> HaproxyRuntime::stat() {
  if (!is_haproxy_name(backend_) || !is_haproxy_name(server_))
    return make_error("config", "invalid HAProxy backend/server name " + backend_ + "/" + server_);
  auto a = command("show stat " + backend_ + " 4 -1");
  if (!a) return a.error();
  return parse_show_stat(*a, backend_, server_);
}

}  // namespace gantry::agent::traffic
