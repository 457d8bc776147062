// The coordinator's read-only HTTP endpoint (/metrics, /status, the status page), served by
// cpp-httplib on its own threads. Handlers only read snapshots the event loop publishes, so no
// request ever runs on, or waits for a turn of, the coordinator's loop.
//
// Bounds, whatever clients do: `threads` connections are served at once and `queue` more wait
// for a thread; when the queue is full the oldest waiting connection is answered 503 and closed
// to make room. Each connection carries one request; its head must arrive within
// `head_timeout_ms` of the accept and be at most `max_request_head` bytes (431), and the whole
// exchange ends within `connection_timeout_ms`. The Host header must name this endpoint
// (host_allowlist.h).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/util/expected.h"

namespace gantry::coordinator {

struct HttpResponse {
  HttpResponse() = default;
  HttpResponse(int s, std::string type, std::string b) : status(s), content_type(std::move(type)), body(std::move(b)) {}

  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // A body shared with a cache (body_cache.h), served instead of `body` without a copy; its
  // gzip, served to a client that accepts gzip; its ETag: a request whose If-None-Match names
  // it gets 304 and no body. Without them the server compresses `body` per request.
  std::shared_ptr<const std::string> shared;
  std::shared_ptr<const std::string> gzip;
  std::string etag;
};

// What a handler sees of a request: the decoded path and the query parameters.
struct HttpRequest {
  std::string path;                                // "/status"; no query
  std::multimap<std::string, std::string> params;  // decoded query parameters
};

struct HttpOptions {
  // DNS names accepted in the Host header besides `localhost` and IP literals (a name people
  // or Prometheus use to reach the coordinator, e.g. "coordinator.example.internal").
  std::vector<std::string> allowed_hosts;
  size_t threads = 4;                   // connections served at once
  size_t queue = 64;                    // connections waiting for a thread
  int head_timeout_ms = 2000;           // from accept to the end of the request head
  int connection_timeout_ms = 10000;    // from accept to the answer written
  size_t max_request_head = 16 * 1024;  // request line and headers
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;
  using RequestHandler = std::function<HttpResponse(const HttpRequest& request)>;

  // `address` is IPV4:PORT or [IPV6]:PORT, e.g. "127.0.0.1:7680" or "[::1]:0" (port 0: any free).
  HttpServer(std::string address, Handler handler, HttpOptions options = {});
  HttpServer(std::string address, RequestHandler handler, HttpOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving; an error names the address or the option at fault.
  Status start();
  // Stops accepting, finishes the connections in hand (each bounded by its timeouts), joins.
  void stop();
  // The address as bound, with the real port: "127.0.0.1:41234", "[::1]:41234".
  std::string bound_address() const { return bound_; }

  // Counters for tests and logs.
  uint64_t refused_host() const { return refused_host_.load(); }
  uint64_t shed() const;

 private:
  class Impl;
  std::string address_;
  RequestHandler handler_;
  HttpOptions options_;
  std::string bound_;
  std::atomic<uint64_t> refused_host_{0};
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace gantry::coordinator
