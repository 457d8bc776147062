#include "coordinator/http/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>

#include "common/util/log.h"
#include "common/util/names.h"
#include "coordinator/http/host_allowlist.h"

namespace gantry::coordinator {

namespace {

using SteadyClock = std::chrono::steady_clock;

auto L() { return log::get("http"); }

// Every response, the page included: nothing may be loaded from elsewhere (the page is
// self-contained; the coordinator may be air-gapped), scripts may only fetch from this
// endpoint, and no other site may frame the page.
constexpr const char* kContentSecurityPolicy =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// A value from a request as one printable ASCII line for the log: anything else as \xNN.
std::string printable(std::string_view s, size_t max = 200) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s.substr(0, max)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

// True once `fd` is ready for `events` (or has failed or hung up, which the next call reports),
// false at `deadline`. Past the deadline it still looks once without waiting: what a client sent
// in time is read even if its connection waited in the queue until then.
bool wait_for(int fd, short events, SteadyClock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left, 0, 1000)));
    if (n > 0) return true;
    if ((n < 0 && errno != EINTR) || left <= 0) return false;
  }
}

void address_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return;
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    port = ntohs(a->sin6_port);
  }
  ip = buf;
}

// One connection's socket as cpp-httplib reads and writes it, with this endpoint's bounds: the
// request must arrive by `head_deadline` and within `head_limit` bytes (else 431, read no
// further), and everything ends by `deadline`. cpp-httplib's own stream bounds each call, not
// the whole, nor the number of header lines.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(int fd, SteadyClock::time_point head_deadline, SteadyClock::time_point deadline, size_t head_limit)
      : fd_(fd), head_deadline_(std::min(head_deadline, deadline)), deadline_(deadline), head_limit_(head_limit) {}

  bool is_readable() const override { return !refused_ && (off_ < len_ || wait_for(fd_, POLLIN, head_deadline_)); }
  bool is_writable() const override { return !refused_ && wait_for(fd_, POLLOUT, deadline_); }

  ssize_t read(char* ptr, size_t size) override {
    if (refused_) return -1;
    if (off_ == len_) {
      if (received_ >= head_limit_) {
        refuse_oversized_head();
        return -1;
      }
      if (!wait_for(fd_, POLLIN, head_deadline_)) return -1;
      const ssize_t n = ::recv(fd_, buf_, std::min(sizeof buf_, head_limit_ - received_), 0);
      if (n <= 0) return n == 0 ? 0 : -1;
      received_ += static_cast<size_t>(n);
      off_ = 0;
      len_ = static_cast<size_t>(n);
    }
    const size_t k = std::min(size, len_ - off_);
    std::memcpy(ptr, buf_ + off_, k);
    off_ += k;
    return static_cast<ssize_t>(k);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (refused_ || !wait_for(fd_, POLLOUT, deadline_)) return -1;
    const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    return n < 0 ? -1 : n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  // The answer cpp-httplib would give is a 400; this one names the limit. Nothing else is
  // written on this connection afterwards.
  void refuse_oversized_head() {
    static constexpr std::string_view k431 =
        "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 25\r\n"
        "Connection: close\r\n\r\nrequest head over limit\r\n";
    if (wait_for(fd_, POLLOUT, deadline_)) (void)::send(fd_, k431.data(), k431.size(), MSG_NOSIGNAL);
    refused_ = true;
  }

  int fd_;
  SteadyClock::time_point head_deadline_, deadline_;
  size_t head_limit_;
  size_t received_ = 0;
  bool refused_ = false;
  char buf_[4096];
  size_t off_ = 0, len_ = 0;
};

// Set while a task runs: when its connection was accepted, and whether it is to be closed
// with a 503 unread (no room: WorkerPool::enqueue).
thread_local SteadyClock::time_point t_accepted_at;
thread_local bool t_shedding = false;

// cpp-httplib's task queue (one task per accepted connection) with bounds: `threads` workers
// and at most `queue` connections waiting. When the queue is full the oldest waiting connection
// makes room: the accepting thread answers it 503 unread and closes it, so a client arriving
// behind a crowd of stalled ones still gets in line, and nothing grows. Deadlines run from
// accept, so stalled connections that waited in the queue are closed as soon as a worker
// reaches them.
class WorkerPool final : public httplib::TaskQueue {
 public:
  WorkerPool(size_t threads, size_t queue, std::atomic<uint64_t>& shed)
      : max_queue_(std::max<size_t>(queue, 1)), shed_(shed) {
    for (size_t i = 0; i < std::max<size_t>(threads, 1); ++i) workers_.emplace_back([this] { work(); });
  }
  ~WorkerPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    Job evicted;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (jobs_.size() >= max_queue_) {
        evicted = std::move(jobs_.front());
        jobs_.pop_front();
      }
      jobs_.push_back({std::move(fn), SteadyClock::now()});
    }
    cv_.notify_one();
    if (evicted.fn) {
      const uint64_t n = shed_.fetch_add(1) + 1;
      const auto now = SteadyClock::now();
      if (n == 1 || now - last_full_log_ >= std::chrono::seconds(10)) {
        L()->warn("{} HTTP connections open (the most served at once); dropped the oldest waiting, {} so far",
                  workers_.size() + max_queue_, n);
        last_full_log_ = now;
      }
      t_shedding = true;
      evicted.fn();
      t_shedding = false;
    }
  }

  // Runs what is queued (each task closes its socket, at once since the server is stopping).
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
  }

 private:
  struct Job {
    std::function<void()> fn;
    SteadyClock::time_point accepted_at;
  };

  void work() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      t_accepted_at = job.accepted_at;
      job.fn();
    }
  }

  const size_t max_queue_;
  std::atomic<uint64_t>& shed_;
  SteadyClock::time_point last_full_log_{};  // accepting thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

// cpp-httplib's Server with its transport replaced through the hook the library's own SSLServer
// uses (process_and_close_socket): one request per connection, read and answered through a
// ConnectionStream; a connection shed for room gets its 503 without being read.
class HttpServer::Impl final : public httplib::Server {
 public:
  explicit Impl(const HttpOptions& o) : options_(o) {}

  // Server::stop() acts only once the accepting thread runs; this closes the listening socket
  // whenever it is called, which ends the accepting loop before or after it started.
  void halt() {
    stopping = true;
    const socket_t s = svr_sock_.exchange(INVALID_SOCKET);
    if (s != INVALID_SOCKET) {
      ::shutdown(s, SHUT_RDWR);
      ::close(s);
    }
  }

  std::atomic<uint64_t> shed{0};
  std::atomic<bool> stopping{false};
  int listen_fd = -1;

 private:
  bool process_and_close_socket(socket_t sock) override {
    bool ok = false;
    if (t_shedding || stopping) {
      static constexpr std::string_view kBusy =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n"
          "Retry-After: 1\r\nConnection: close\r\n\r\nbusy: too many HTTP connections\n";
      (void)::send(sock, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
      const auto now = t_accepted_at;
      ConnectionStream strm(sock, now + std::chrono::milliseconds(options_.head_timeout_ms),
                            now + std::chrono::milliseconds(options_.connection_timeout_ms), options_.max_request_head);
      bool closed = false;
      // Brotli at cpp-httplib's quality (11) costs seconds on a large /status; gzip stays.
      const auto setup = [](httplib::Request& req) {
        if (req.has_header("Accept-Encoding")) {
          const bool gzip = req.get_header_value("Accept-Encoding").find("gzip") != std::string::npos;
          req.headers.erase("Accept-Encoding");
          if (gzip) req.set_header("Accept-Encoding", "gzip");
        }
      };
      if (strm.is_readable()) ok = process_request(strm, /*close_connection=*/true, closed, setup);
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }

  HttpOptions options_;
};

HttpServer::HttpServer(std::string address, Handler handler, HttpOptions options)
    : HttpServer(std::move(address),
                 RequestHandler([h = std::move(handler)](const HttpRequest& r) { return h(r.path); }),
                 std::move(options)) {}

HttpServer::HttpServer(std::string address, RequestHandler handler, HttpOptions options)
    : address_(std::move(address)), handler_(std::move(handler)), options_(std::move(options)) {}

HttpServer::~HttpServer() { stop(); }

uint64_t HttpServer::shed() const { return impl_ ? impl_->shed.load() : 0; }

Status HttpServer::start() {
  if (impl_) return make_error("state", "HTTP server already started");
  const auto colon = address_.rfind(':');
  if (colon == std::string::npos)
    return make_error("config", "http address must be IPV4:PORT or [IPV6]:PORT, got " + address_);
  std::string host = address_.substr(0, colon);
  const bool v6 = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (v6) host = host.substr(1, host.size() - 2);
  // 0..65535 (0: any free port).
  const std::optional<int> port = parse_port(address_.substr(colon + 1));
  if (!port) return make_error("config", "bad port in http address " + address_ + " (want 0..65535)");
  in6_addr a6{};
  in_addr a4{};
  if (v6 ? ::inet_pton(AF_INET6, host.c_str(), &a6) != 1 : ::inet_pton(AF_INET, host.c_str(), &a4) != 1) {
    return make_error("config",
                      "http address must be IPV4:PORT or [IPV6]:PORT (an address, not a name), got " + address_);
  }
  if (options_.threads == 0 || options_.head_timeout_ms <= 0 || options_.connection_timeout_ms <= 0 ||
      options_.max_request_head < 1024) {
    return make_error("config", "HTTP limits: threads >= 1, timeouts > 0, request head >= 1024 bytes");
  }
  auto allow = HostAllowlist::make(options_.allowed_hosts);
  if (!allow) return allow.error();

  impl_ = std::make_unique<Impl>(options_);
  Impl& srv = *impl_;
  srv.new_task_queue = [this, &srv] { return new WorkerPool(options_.threads, options_.queue, srv.shed); };
  // SO_REUSEADDR only: cpp-httplib's default, SO_REUSEPORT, would let a second coordinator bind
  // the same port and take half the requests. TCP_DEFER_ACCEPT: a connection that never sends
  // stays with the kernel (bounded by the backlog) instead of holding a thread.
  srv.set_socket_options([this, &srv](socket_t fd) {
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int defer_s = std::max(1, options_.head_timeout_ms / 1000);
    ::setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof defer_s);
    srv.listen_fd = fd;  // for the backlog below
  });
  srv.set_payload_max_length(0);
  srv.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    res.status = 500;
    res.set_content("internal error\n", "text/plain");
  });
  const HostAllowlist hosts = *allow;
  srv.set_pre_routing_handler([this, hosts](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Content-Security-Policy", kContentSecurityPolicy);
    // HTTP/1.1 requires Host (RFC 9112 §3.2). HTTP/1.0 may omit it: such a request comes from a
    // script or tool, never from a browser (browsers always send Host), so it cannot be the
    // DNS-rebinding case the check is for.
    const size_t n_host = req.get_header_value_count("Host");
    if (n_host > 1 || (n_host == 0 && req.version != "HTTP/1.0")) {
      res.status = 400;
      res.set_content("one Host header required\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (n_host == 1 && !hosts.allows(req.get_header_value("Host"))) {
      const uint64_t n = refused_host_.fetch_add(1) + 1;
      // Logged at the first refusal and then every 100th: a page retrying cannot flood the log.
      if (n == 1 || n % 100 == 0) {
        L()->warn(
            "HTTP request from {} refused: Host '{}' is not a name of this endpoint ({} refused so far; "
            "names are added with the allowed-hosts option)",
            printable(req.remote_addr), printable(req.get_header_value("Host")), n);
      }
      res.status = 421;
      res.set_content("this endpoint does not answer to that Host name\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("read-only: GET or HEAD\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    HttpRequest r{req.path, {req.params.begin(), req.params.end()}};
    HttpResponse out;
    try {
      out = handler_(r);
    } catch (const std::exception& e) {
      L()->error("HTTP handler for {} failed: {}", printable(req.path), e.what());
      out = {500, "text/plain", "internal error\n"};
    }
    res.status = out.status;
    if (!out.shared || out.shared->empty()) {
      res.set_content(out.shared ? std::string() : out.body, out.content_type);
      return httplib::Server::HandlerResponse::Handled;
    }
    // A shared body: written from the cache's buffer (a content provider: no copy, and
    // cpp-httplib compresses only chunked ones), gzip if the client takes it, nothing if the
    // client has it already.
    if (!out.etag.empty()) {
      res.set_header("ETag", out.etag);
      if (req.get_header_value("If-None-Match") == out.etag) {
        res.status = 304;
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    res.set_header("Vary", "Accept-Encoding");
    std::shared_ptr<const std::string> send = out.shared;
    if (out.gzip && req.get_header_value("Accept-Encoding") == "gzip") {  // normalised by the setup below
      send = out.gzip;
      res.set_header("Content-Encoding", "gzip");
    }
    res.set_content_provider(
        send->size(), out.content_type,
        [send](size_t offset, size_t length, httplib::DataSink& sink) {
          return sink.write(send->data() + offset, std::min(length, send->size() - offset));
        },
        nullptr);
    return httplib::Server::HandlerResponse::Handled;
  });

  const int bound_port = *port == 0 ? srv.bind_to_any_port(host) : (srv.bind_to_port(host, *port) ? *port : -1);
  if (bound_port <= 0) {
    const int e = errno;
    impl_.reset();
    return make_error("io", "cannot listen on " + address_ + ": " + std::strerror(e));
  }
  // cpp-httplib listens with a backlog of 5; room for a burst of scrapers and page loads.
  if (srv.listen_fd >= 0) ::listen(srv.listen_fd, 128);
  bound_ = (v6 ? "[" + host + "]" : host) + ":" + std::to_string(bound_port);
  thread_ = std::thread([&srv] { srv.listen_after_bind(); });
  return Status::Ok();
}

void HttpServer::stop() {
  if (!impl_) return;
  impl_->halt();
  if (thread_.joinable()) thread_.join();
  impl_.reset();
}

}  // namespace gantry::coordinator
