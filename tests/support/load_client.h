// A small HTTP load generator for the traffic tests and the demo: N threads send GET requests
// (one connection each, Connection: close) to 127.0.0.1:port at a steady total rate, and count
// every request, every non-2xx answer and every connection error, and which version answered
// (the demo service's body: "version=<v>" or "<v>\n").
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace gantry::testing {

struct LoadCounts {
  uint64_t requests = 0;
  uint64_t ok = 0;                             // 2xx
  uint64_t non_2xx = 0;                        // answered with another status
  uint64_t errors = 0;                         // refused, reset, timed out, malformed
  std::map<std::string, uint64_t> by_version;  // 2xx answers per version
  std::vector<std::string> samples;            // the first few failures, described
  uint64_t failed() const { return non_2xx + errors; }
  // "requests=N failed=N (non-2xx N, errors N) v1=N v2=N"
  std::string summary() const;
};

class LoadClient {
 public:
  // rate: requests per second in total; threads: concurrent senders.
  LoadClient(int port, std::string path, int rate, int threads = 8, int timeout_ms = 5000);
  ~LoadClient();
  LoadClient(const LoadClient&) = delete;
  LoadClient& operator=(const LoadClient&) = delete;

  void start();
  // The counts since the previous take() (or start()), and starts counting afresh.
  LoadCounts take();
  // Stops the senders (requests in flight finish) and returns the counts since the last take().
  LoadCounts stop();

 private:
  void sender(int index);
  void record(int status, const std::string& body, const std::string& error);

  int port_;
  std::string path_;
  int rate_, threads_, timeout_ms_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> senders_;
  std::mutex mu_;
  LoadCounts counts_;
};

}  // namespace gantry::testing
