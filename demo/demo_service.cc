// gantry-demo-service: the tiny HTTP/1.1 service the demo and the tests roll out.
//
// Its version and behaviour come from a release's config file (or the command line), so one
// binary can play a good release, one that fails its health check, one that dies at start and
// one that is slow to come up. Plain POSIX sockets, one thread per connection, Connection: close.
//
//   GET /         200 "gantry-demo-service version=<v> behaviour=<b>\n"
//   GET /version  200 "<v>\n"
//   GET /health   200 "ok\n", or 500 "unhealthy\n" when behaviour=unhealthy or while the
//                 file <root>/FAIL-<version> exists (root = two levels above --config)
//   GET /message  200 "<message>\n" (the optional message= line of the config)
//   GET /work?ms=N  200 "<v>\n" after N ms (0..10000): a request that is in flight for a while;
//                 with behaviour=errors, 500 "error\n" for error_percent% of them (default 30;
//                 every request k with k*P mod 100 < P, so exactly P of each 100), while /health
//                 stays 200: a release that passes every probe and still fails its users
//   GET /metrics  Prometheus text: demo_requests_total{path,code}, the
//                 demo_request_duration_seconds histogram and demo_build_info{version}
//   anything else 404
//
// On SIGTERM or SIGINT it drains like a well-behaved service: it stops accepting (closes its
// listener), finishes the requests in flight (at most --drain-timeout-s), then exits 0. With
// --no-graceful (or graceful=false in the config) it exits at once instead, dropping what is
// in flight (for tests of a service that does not drain).
//
// It exits by itself after --max-lifetime-s so a process forgotten by a test cannot linger.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace {

constexpr const char* kName = "gantry-demo-service";
constexpr size_t kMaxRequestBytes = 8192;
constexpr int kClientTimeoutS = 2;
constexpr int kMaxConcurrentClients = 64;
constexpr int kSlowStartMs = 3000;
constexpr long kMaxWorkMs = 10000;

// What /metrics reports: requests by path and status code, and their durations. Paths and codes
// are fixed sets, so a client cannot grow the label space.
constexpr const char* kPaths[] = {"/", "/version", "/health", "/work", "/message", "/metrics", "other"};
constexpr int kCodes[] = {200, 400, 404, 405, 500};
constexpr double kBuckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
constexpr size_t kNumPaths = sizeof kPaths / sizeof kPaths[0];
constexpr size_t kNumCodes = sizeof kCodes / sizeof kCodes[0];
constexpr size_t kNumBuckets = sizeof kBuckets / sizeof kBuckets[0];

struct Stats {
  std::atomic<uint64_t> requests[kNumPaths][kNumCodes]{};
  std::atomic<uint64_t> buckets[kNumBuckets]{};  // cumulative at render time
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> sum_us{0};
  std::atomic<uint64_t> work_seen{0};  // /work requests, for behaviour=errors

  void observe(size_t path, int code, double seconds) {
    size_t c = 0;
    while (c + 1 < kNumCodes && kCodes[c] != code) ++c;
    if (kCodes[c] != code) return;
    requests[path][c]++;
    for (size_t b = 0; b < kNumBuckets; ++b) {
      if (seconds <= kBuckets[b]) {
        buckets[b]++;
        break;
      }
    }
    count++;
    sum_us += static_cast<uint64_t>(seconds * 1e6);
  }
};

struct Config {
  int port = 0;
  std::string bind = "127.0.0.1";
  std::string version = "dev";
  std::string behaviour = "healthy";
  std::string message;
  long error_percent = 30;  // behaviour=errors: this share of /work requests answers 500
  long max_lifetime_s = 3600;
  bool graceful = true;       // drain in-flight requests on SIGTERM
  long drain_timeout_s = 10;  // bound on that drain
  // Fault injection for tests: /health answers 500 while this file exists. With --config
  // ROOT/current/release.conf it is ROOT/FAIL-<version>, so one host can be made to fail one
  // version without building a special release.
  std::string fail_marker;
};

// Set from signal handlers; the main loop polls with a short timeout and checks it.
volatile sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int sig) { g_stop_signal = sig; }

void log_line(const std::string& line) {
  // stderr is unbuffered: lines reach the service log even when the process is killed.
  std::fprintf(stderr, "%s: %s\n", kName, line.c_str());
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const auto begin = s.find_first_not_of(ws);
  if (begin == std::string::npos) return "";
  const auto end = s.find_last_not_of(ws);
  return s.substr(begin, end - begin + 1);
}

bool valid_behaviour(const std::string& b) {
  return b == "healthy" || b == "unhealthy" || b == "crash" || b == "slow-start" || b == "errors";
}

std::optional<long> parse_long(const std::string& s, long min, long max) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (errno != 0 || end == nullptr || *end != '\0' || v < min || v > max) return std::nullopt;
  return v;
}

// Reads key=value lines; blank lines and '#' comments are skipped, unknown keys are ignored
// (a newer release may carry keys this binary does not know).
bool load_config_file(const std::string& path, Config& cfg, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot open config file " + path + ": " + std::strerror(errno);
    return false;
  }
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) {
      error = path + ":" + std::to_string(lineno) + ": expected key=value";
      return false;
    }
    const std::string key = trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    if (key == "version") {
      cfg.version = value;
    } else if (key == "behaviour" || key == "behavior") {
      cfg.behaviour = value;
    } else if (key == "message") {
      cfg.message = value;
    } else if (key == "error_percent") {
      const auto v = parse_long(value, 0, 100);
      if (!v) {
        error = path + ":" + std::to_string(lineno) + ": error_percent must be 0..100";
        return false;
      }
      cfg.error_percent = *v;
    } else if (key == "graceful") {
      if (value != "true" && value != "false") {
        error = path + ":" + std::to_string(lineno) + ": graceful must be true or false";
        return false;
      }
      cfg.graceful = value == "true";
    }
  }
  return true;
}

void usage() {
  std::fprintf(stderr,
               "usage: %s --port N [--bind ADDR] [--config FILE] [--version V]\n"
               "       [--behaviour healthy|unhealthy|crash|slow-start|errors] [--error-percent P]\n"
               "       [--max-lifetime-s N]\n"
               "       [--no-graceful] [--drain-timeout-s N]\n",
               kName);
}

// Command line: --opt value or --opt=value. Returns the exit code to use on failure.
std::optional<int> parse_args(int argc, char** argv, Config& cfg) {
  std::string config_file;
  std::optional<std::string> version_override, behaviour_override;
  std::optional<long> error_percent_override;
  bool have_port = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage();
      return 0;
    }
    if (arg == "--no-graceful") {
      cfg.graceful = false;
      continue;
    }
    std::string value;
    const auto eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      log_line("missing value for " + arg);
      usage();
      return 2;
    }
    if (arg == "--port") {
      const auto p = parse_long(value, 1, 65535);
      if (!p) {
        log_line("invalid --port " + value);
        return 2;
      }
      cfg.port = static_cast<int>(*p);
      have_port = true;
    } else if (arg == "--bind") {
      cfg.bind = value;
    } else if (arg == "--config") {
      config_file = value;
    } else if (arg == "--version") {
      version_override = value;
    } else if (arg == "--behaviour" || arg == "--behavior") {
      behaviour_override = value;
    } else if (arg == "--error-percent") {
      const auto v = parse_long(value, 0, 100);
      if (!v) {
        log_line("invalid --error-percent " + value);
        return 2;
      }
      error_percent_override = *v;
    } else if (arg == "--drain-timeout-s") {
      const auto v = parse_long(value, 0, 3600);
      if (!v) {
        log_line("invalid --drain-timeout-s " + value);
        return 2;
      }
      cfg.drain_timeout_s = *v;
    } else if (arg == "--max-lifetime-s") {
      const auto v = parse_long(value, 1, 10L * 365 * 24 * 3600);
      if (!v) {
        log_line("invalid --max-lifetime-s " + value);
        return 2;
      }
      cfg.max_lifetime_s = *v;
    } else {
      log_line("unknown option " + arg);
      usage();
      return 2;
    }
  }
  if (!have_port) {
    log_line("--port is required");
    usage();
    return 2;
  }
  if (!config_file.empty()) {
    std::string error;
    if (!load_config_file(config_file, cfg, error)) {
      log_line(error);
      return 2;
    }
  }
  if (version_override) cfg.version = *version_override;
  if (behaviour_override) cfg.behaviour = *behaviour_override;
  if (error_percent_override) cfg.error_percent = *error_percent_override;
  if (!config_file.empty()) {
    // <root>/current/release.conf -> <root>/FAIL-<version>
    std::string dir =
        config_file.substr(0, config_file.find_last_of('/') == std::string::npos ? 0 : config_file.find_last_of('/'));
    auto slash = dir.find_last_of('/');
    std::string root = slash == std::string::npos ? std::string(".") : dir.substr(0, slash);
    cfg.fail_marker = root + "/FAIL-" + cfg.version;
  }
  if (!valid_behaviour(cfg.behaviour)) {
    log_line("invalid behaviour '" + cfg.behaviour + "'");
    return 2;
  }
  return std::nullopt;
}

void send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the client went away; nothing useful to do
    off += static_cast<size_t>(n);
  }
}

void respond(int fd, int status, const std::string& body, bool head_only) {
  const char* reason = status == 200   ? "OK"
                       : status == 404 ? "Not Found"
                       : status == 405 ? "Method Not Allowed"
                       : status == 400 ? "Bad Request"
                                       : "Internal Server Error";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                    "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n\r\n";
  if (!head_only) out += body;
  send_all(fd, out);
}

std::string render_metrics(const Config& cfg, const Stats& st) {
  std::string o =
      "# HELP demo_build_info The release this process runs; always 1.\n# TYPE demo_build_info gauge\n"
      "demo_build_info{version=\"" +
      cfg.version + "\",behaviour=\"" + cfg.behaviour +
      "\"} 1\n# HELP demo_requests_total HTTP requests answered, by path and status code.\n"
      "# TYPE demo_requests_total counter\n";
  for (size_t p = 0; p < kNumPaths; ++p)
    for (size_t c = 0; c < kNumCodes; ++c)
      o += "demo_requests_total{path=\"" + std::string(kPaths[p]) + "\",code=\"" + std::to_string(kCodes[c]) + "\"} " +
           std::to_string(st.requests[p][c].load()) + "\n";
  o += "# HELP demo_request_duration_seconds Time from reading a request to answering it.\n"
       "# TYPE demo_request_duration_seconds histogram\n";
  uint64_t cum = 0;
  char le[32];
  for (size_t b = 0; b < kNumBuckets; ++b) {
    cum += st.buckets[b].load();
    std::snprintf(le, sizeof le, "%g", kBuckets[b]);
    o += "demo_request_duration_seconds_bucket{le=\"" + std::string(le) + "\"} " + std::to_string(cum) + "\n";
  }
  const uint64_t count = st.count.load();
  char sum[64];
  std::snprintf(sum, sizeof sum, "%.6f", static_cast<double>(st.sum_us.load()) / 1e6);
  o += "demo_request_duration_seconds_bucket{le=\"+Inf\"} " + std::to_string(count) + "\n" +
       "demo_request_duration_seconds_sum " + sum + "\ndemo_request_duration_seconds_count " + std::to_string(count) +
       "\n";
  return o;
}

size_t path_index(const std::string& path) {
  for (size_t i = 0; i + 1 < kNumPaths; ++i)
    if (path == kPaths[i]) return i;
  return kNumPaths - 1;
}

// Answers with `status` and counts it for /metrics (path index `p`, since `t0`).
struct Answer {
  int fd;
  Stats& st;
  size_t p;
  std::chrono::steady_clock::time_point t0;
  void operator()(int status, const std::string& body, bool head_only) const {
    respond(fd, status, body, head_only);
    st.observe(p, status, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
};

void handle_client(int fd, const Config& cfg, Stats& st) {
  timeval tv{kClientTimeoutS, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  // Only the request line matters; read until the end of the headers (or give up at a limit).
  std::string req;
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos &&
         req.size() < kMaxRequestBytes) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    req.append(buf, static_cast<size_t>(n));
  }
  const auto eol = req.find_first_of("\r\n");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string request_line = req.substr(0, eol);
  const auto sp1 = request_line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? std::string::npos : request_line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos) {
    respond(fd, 400, "bad request\n", false);
    return;
  }
  const std::string method = request_line.substr(0, sp1);
  std::string path = request_line.substr(sp1 + 1, sp2 == std::string::npos ? std::string::npos : sp2 - sp1 - 1);
  std::string query;
  if (const auto q = path.find('?'); q != std::string::npos) {
    query = path.substr(q + 1);
    path.resize(q);
  }
  const bool head = method == "HEAD";
  const Answer answer{fd, st, path_index(path), t0};
  if (method != "GET" && !head) {
    answer(405, "method not allowed\n", false);
    return;
  }
  if (path == "/") {
    answer(200, std::string(kName) + " version=" + cfg.version + " behaviour=" + cfg.behaviour + "\n", head);
  } else if (path == "/version") {
    answer(200, cfg.version + "\n", head);
  } else if (path == "/health") {
    struct stat marker {};
    if (cfg.behaviour == "unhealthy" || (!cfg.fail_marker.empty() && ::stat(cfg.fail_marker.c_str(), &marker) == 0)) {
      answer(500, "unhealthy\n", head);
    } else {
      answer(200, "ok\n", head);
    }
  } else if (path == "/work") {
    long ms = 0;
    if (query.rfind("ms=", 0) == 0) {
      const auto v = parse_long(query.substr(3), 0, kMaxWorkMs);
      if (!v) {
        answer(400, "ms must be 0.." + std::to_string(kMaxWorkMs) + "\n", head);
        return;
      }
      ms = *v;
    }
    // Not cut short by a stop signal: an in-flight request finishes during a drain.
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    const uint64_t k = st.work_seen++;
    if (cfg.behaviour == "errors" &&
        static_cast<long>((k * static_cast<uint64_t>(cfg.error_percent)) % 100) < cfg.error_percent) {
      answer(500, "error\n", head);
      return;
    }
    answer(200, cfg.version + "\n", head);
  } else if (path == "/metrics") {
    answer(200, render_metrics(cfg, st), head);
  } else if (path == "/message") {
    answer(200, cfg.message + "\n", head);
  } else {
    answer(404, "not found\n", head);
  }
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll()/sleeps return EINTR so we notice promptly
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGPIPE, &ign, nullptr);
}

using Clock = std::chrono::steady_clock;

// Sleeps until `until` or a stop signal, whichever is first. Returns false on a stop signal.
bool sleep_until(Clock::time_point until) {
  while (g_stop_signal == 0) {
    const auto now = Clock::now();
    if (now >= until) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
    ::poll(nullptr, 0, static_cast<int>(std::min<long long>(left, 50)));
  }
  return false;
}

int open_listener(const Config& cfg) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(cfg.port));
  if (::inet_pton(AF_INET, cfg.bind.c_str(), &addr.sin_addr) != 1) {
    log_line("invalid --bind address " + cfg.bind + " (IPv4 expected)");
    return -1;
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log_line(std::string("socket: ") + std::strerror(errno));
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    log_line("cannot bind " + cfg.bind + ":" + std::to_string(cfg.port) + ": " + std::strerror(errno));
    ::close(fd);
    return -1;
  }
  if (::listen(fd, 128) != 0) {
    log_line(std::string("listen: ") + std::strerror(errno));
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  auto cfg = std::make_shared<Config>();
  if (const auto rc = parse_args(argc, argv, *cfg)) return *rc;
  install_signal_handlers();

  const auto started = Clock::now();
  const auto deadline = started + std::chrono::seconds(cfg->max_lifetime_s);
  log_line("pid " + std::to_string(::getpid()) + " starting: version=" + cfg->version + " behaviour=" + cfg->behaviour +
           " port=" + std::to_string(cfg->port));

  if (cfg->behaviour == "crash") {
    log_line("behaviour=crash: exiting with status 1 before listening");
    return 1;
  }
  if (cfg->behaviour == "slow-start") {
    log_line("behaviour=slow-start: waiting " + std::to_string(kSlowStartMs) + " ms before listening");
    if (!sleep_until(std::min(deadline, started + std::chrono::milliseconds(kSlowStartMs)))) {
      log_line("stopped by signal " + std::to_string(g_stop_signal) + " during slow start");
      return 0;
    }
  }

  const int listener = open_listener(*cfg);
  if (listener < 0) return 1;
  log_line("listening on " + cfg->bind + ":" + std::to_string(cfg->port));

  auto active = std::make_shared<std::atomic<int>>(0);
  auto stats = std::make_shared<Stats>();
  while (g_stop_signal == 0) {
    const auto now = Clock::now();
    if (now >= deadline) {
      log_line("max lifetime of " + std::to_string(cfg->max_lifetime_s) + " s reached, exiting");
      ::close(listener);
      return 0;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd pfd{listener, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 500)));
    if (ready <= 0) continue;  // timeout, or EINTR from a stop signal
    const int client = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    if (active->load() >= kMaxConcurrentClients) {
      // Too many slow clients: serve this one inline rather than growing without bound.
      handle_client(client, *cfg, *stats);
      ::close(client);
      continue;
    }
    ++*active;
    // Detached: the thread owns shared copies of everything it touches, so exiting main while
    // a client is still being served is safe.
    std::thread([client, cfg, active, stats] {
      handle_client(client, *cfg, *stats);
      ::close(client);
      --*active;
    }).detach();
  }
  // Stop accepting: new connections are refused from here on (and those still in the accept
  // queue are reset), then finish what is in flight.
  ::close(listener);
  if (!cfg->graceful) {
    log_line("stopped by signal " + std::to_string(g_stop_signal) +
             " (not graceful: " + std::to_string(active->load()) + " requests in flight dropped)");
    return 0;
  }
  const auto drain_deadline = Clock::now() + std::chrono::seconds(cfg->drain_timeout_s);
  log_line("signal " + std::to_string(g_stop_signal) + ": draining " + std::to_string(active->load()) +
           " requests in flight");
  while (active->load() > 0 && Clock::now() < drain_deadline) ::poll(nullptr, 0, 10);
  log_line("stopped by signal " + std::to_string(g_stop_signal) + " after draining (" + std::to_string(active->load()) +
           " left)");
  return 0;
}
