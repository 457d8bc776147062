// Local health probes: one check of one thing, answered with a Status whose message
// says what was wrong ("http://127.0.0.1:18081/health returned 500").
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/util/clock.h"
#include "common/util/expected.h"

namespace gantry::agent {

class Probe {
 public:
  virtual ~Probe() = default;
  // What is probed, for logs and reports.
  virtual std::string describe() const = 0;
  // One blocking check, bounded by timeout_ms. OK iff healthy.
  virtual Status check(Millis timeout_ms) = 0;
};

// GET http://host:port/path over a plain socket; healthy iff status 200 (and the body
// contains `expect`, when given).
class HttpProbe final : public Probe {
 public:
  HttpProbe(std::string url, std::string expect = {});
  std::string describe() const override { return url_; }
  Status check(Millis timeout_ms) override;
  // Validates a probe URL (http only, numeric or named host, explicit or default port).
  static Status validate(const std::string& url);

 private:
  std::string url_, expect_, host_, port_, path_;
  bool valid_ = false;
};

// Healthy iff a TCP connection to host:port is accepted.
class TcpProbe final : public Probe {
 public:
  explicit TcpProbe(std::string host_port);
  std::string describe() const override { return "tcp://" + host_ + ":" + port_; }
  Status check(Millis timeout_ms) override;
  static Status validate(const std::string& host_port);

 private:
  std::string host_, port_;
  bool valid_ = false;
};

using ProbeList = std::vector<std::shared_ptr<Probe>>;

}  // namespace gantry::agent
