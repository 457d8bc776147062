// A small read-only HTTP/1.1 server for /metrics, /status and the status page. It runs on
// its own thread and only reads snapshots the event loop publishes. One poll loop serves many
// connections at once, each with a deadline, so clients that stall (never finish the request,
// never read the answer) cannot keep a scraper waiting: at most kMaxConnections are open, the
// oldest is dropped for a new one, and none lives longer than kConnectionDeadlineMs.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "common/util/expected.h"

namespace gantry::coordinator {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;
  HttpServer(std::string address, Handler handler);  // address "127.0.0.1:7680" (port 0 = any)
  ~HttpServer();
  Status start();
  void stop();
  std::string bound_address() const { return bound_; }

  static constexpr size_t kMaxConnections = 128;
  static constexpr int kConnectionDeadlineMs = 5000;  // request read + answer written
  static constexpr size_t kMaxRequestHead = 8192;

 private:
  struct Conn;
  void loop();
  HttpResponse respond(const std::string& request);

  std::string address_;
  Handler handler_;
  int listen_fd_ = -1;
  std::string bound_;
  std::atomic<bool> stop_{false};
  uint64_t dropped_for_room_ = 0;  // loop thread only
  int64_t last_full_log_ms_ = -1000000;
  std::thread thread_;
};

}  // namespace gantry::coordinator
