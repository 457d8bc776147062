// Prometheus' HTTP API, the instant query (GET /api/v1/query), behind an interface the analysis
// scheduler's tests can replace. Everything Prometheus answers is hostile input: bounded in
// size and time, parsed into one number or an error, never an exception.
#pragma once

#include <string>

#include "common/util/expected.h"

namespace gantry::coordinator::analysis {

class PromQuerier {
 public:
  virtual ~PromQuerier() = default;
  // The value of `promql` now on the server at `base_url` (http://HOST:PORT[/PREFIX]): a scalar,
  // or an instant vector of exactly one sample. The error says why there is none (unreachable,
  // HTTP status, Prometheus' own error, no data, several series), made safe and short; code
  // "promql" when Prometheus refuses the query itself (bad_data), "prometheus" otherwise.
  virtual Expected<double> instant(const std::string& base_url, const std::string& promql) = 0;
};

// Over cpp-httplib: a fresh connection per query, connect and read timeouts, answers over
// 1 MiB refused.
class HttpPromQuerier : public PromQuerier {
 public:
  explicit HttpPromQuerier(int timeout_ms = 3000) : timeout_ms_(timeout_ms) {}
  Expected<double> instant(const std::string& base_url, const std::string& promql) override;

 private:
  int timeout_ms_;
};

// A server address as the coordinator's --prometheus takes it: http://HOST:PORT with an
// optional path prefix; "origin" is scheme://host:port, "prefix" the path ("" or "/x").
struct ServerUrl {
  std::string origin, prefix;
};
Expected<ServerUrl> parse_server_url(const std::string& url);

// The body of an /api/v1/query answer with its HTTP status, as one number or an error.
Expected<double> parse_query_response(int http_status, const std::string& body);

}  // namespace gantry::coordinator::analysis
