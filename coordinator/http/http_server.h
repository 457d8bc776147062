// A small read-only HTTP/1.1 server for /metrics, /status and the status page. It runs on
// its own thread and only reads snapshots the event loop publishes.
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

 private:
  void loop();
  void serve(int fd);

  std::string address_;
  Handler handler_;
  int listen_fd_ = -1;
  std::string bound_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace gantry::coordinator
