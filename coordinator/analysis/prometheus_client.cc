#include "coordinator/analysis/prometheus_client.h"

#include <httplib.h>

#include <cctype>
#include <cmath>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "common/util/text.h"

namespace gantry::coordinator::analysis {
namespace {

constexpr size_t kMaxBody = 1024 * 1024;
constexpr size_t kMaxMessage = 300;

Error prom_error(const std::string& what) { return make_error("prometheus", safe_text(what, kMaxMessage)); }

// A sample value as Prometheus writes it: a JSON string holding a float, "NaN", "+Inf" or "-Inf".
Expected<double> sample_value(const nlohmann::json& v) {
  if (!v.is_string()) return prom_error("a sample value is not a string");
  const std::string s = v.get<std::string>();
  if (s == "NaN") return std::nan("");
  if (s == "+Inf") return HUGE_VAL;
  if (s == "-Inf") return -HUGE_VAL;
  if (s.empty() || s.size() > 64) return prom_error("a sample value is not a number");
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return prom_error("a sample value is not a number: " + s);
  return d;
}

}  // namespace

Expected<ServerUrl> parse_server_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0)
    return make_error("usage", "a Prometheus address must start with http:// (got \"" + safe_text(url, 100) + "\")");
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  const std::string hostport = rest.substr(0, slash);
  std::string prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  const size_t colon = hostport.rfind(':');
  if (hostport.empty() || colon == std::string::npos || colon == 0 || colon + 1 >= hostport.size())
    return make_error("usage", "a Prometheus address needs a host and a port: http://HOST:PORT (got \"" +
                                   safe_text(url, 100) + "\")");
  const std::string port = hostport.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535)
    return make_error("usage", "a Prometheus address has a bad port: \"" + safe_text(url, 100) + "\"");
  for (char c : hostport)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
      return make_error("usage", "a Prometheus address has a bad host: \"" + safe_text(url, 100) + "\"");
  for (char c : prefix)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '-' || c == '_' || c == '.'))
      return make_error("usage", "a Prometheus address has a bad path: \"" + safe_text(url, 100) + "\"");
  return ServerUrl{scheme + hostport, prefix};
}

Expected<double> parse_query_response(int http_status, const std::string& body) {
  if (body.size() > kMaxBody) return prom_error("the answer is larger than 1 MiB");
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return prom_error("HTTP " + std::to_string(http_status) + " with an answer that is not JSON");
  const auto str = [&](const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (str("status") != "success") {
    const std::string type = str("errorType"), msg = str("error");
    if (type == "bad_data")  // the query itself is wrong (syntax, types): a plan error, not an outage
      return make_error("promql", safe_text("invalid PromQL: " + msg, kMaxMessage));
    return prom_error("query error (HTTP " + std::to_string(http_status) + (type.empty() ? "" : ", " + type) +
                      "): " + (msg.empty() ? "no message" : msg));
  }
  auto data = j.find("data");
  if (data == j.end() || !data->is_object()) return prom_error("the answer has no data");
  auto type_it = data->find("resultType");
  auto result = data->find("result");
  if (type_it == data->end() || !type_it->is_string() || result == data->end())
    return prom_error("the answer has no result");
  const std::string type = type_it->get<std::string>();
  if (type == "scalar") {
    if (!result->is_array() || result->size() != 2) return prom_error("a malformed scalar");
    return sample_value((*result)[1]);
  }
  if (type != "vector")
    return prom_error("the query returns a " + type + "; an instant vector of one series or a scalar is needed");
  if (!result->is_array()) return prom_error("a malformed vector");
  if (result->empty()) return prom_error("no data (the query matched no series)");
  if (result->size() > 1)
    return prom_error("the query returns " + std::to_string(result->size()) +
                      " series; aggregate it to one (e.g. sum(...) or max(...))");
  const auto& sample = (*result)[0];
  if (!sample.is_object() || !sample.contains("value") || !sample["value"].is_array() || sample["value"].size() != 2)
    return prom_error("a malformed sample");
  return sample_value(sample["value"][1]);
}

Expected<double> HttpPromQuerier::instant(const std::string& base_url, const std::string& promql) {
  auto url = parse_server_url(base_url);
  if (!url) return url.error();
  try {
    httplib::Client cli(url->origin);
    const auto timeout = std::chrono::milliseconds(timeout_ms_);
    cli.set_connection_timeout(timeout);
    cli.set_read_timeout(timeout);
    cli.set_write_timeout(timeout);
    cli.set_keep_alive(false);
    std::string body;
    bool too_big = false;
    auto res = cli.Get(url->prefix + "/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{},
                       [&](const char* data, size_t n) {
                         if (body.size() + n > kMaxBody) {
                           too_big = true;
                           return false;
                         }
                         body.append(data, n);
                         return true;
                       });
    if (too_big) return prom_error("the answer is larger than 1 MiB");
    if (!res) return prom_error("cannot reach Prometheus at " + base_url + ": " + httplib::to_string(res.error()));
    return parse_query_response(res->status, body);
  } catch (const std::exception& e) {
    return prom_error(std::string("query failed: ") + e.what());
  }
}

}  // namespace gantry::coordinator::analysis
