// `etcd://h1:2379,h2:2379,...` (--store) into a ClientConfig's endpoint list, and the prefix
// range end: the parts of the client that need no connection.
#include <string>

#include "coordinator/etcd/etcd_client.h"

namespace gantry::etcd {

namespace {

constexpr int kDefaultPort = 2379;

bool allowed(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == ':' ||
         c == '_' || c == '-' || c == '[' || c == ']';
}

// "host", "host:port", "[v6]" or "[v6]:port" into "host:port" (port 2379 when absent).
Expected<std::string> parse_endpoint(const std::string& e) {
  if (e.empty()) return make_error("config", "etcd endpoint list has an empty entry");
  for (char c : e) {
    if (!allowed(c))
      return make_error("config", "etcd endpoint has a character outside [A-Za-z0-9.:_-[]]: (code " +
                                      std::to_string(static_cast<unsigned char>(c)) + ")");
  }
  std::string host;
  std::string port;
  if (e.front() == '[') {
    const auto close = e.find(']');
    if (close == std::string::npos || close == 1) return make_error("config", "etcd endpoint " + e + ": bad [address]");
    host = e.substr(0, close + 1);
    if (close + 1 < e.size()) {
      if (e[close + 1] != ':') return make_error("config", "etcd endpoint " + e + ": expected :port after ]");
      port = e.substr(close + 2);
      if (port.empty()) return make_error("config", "etcd endpoint " + e + ": empty port");
    }
  } else {
    const auto colon = e.find(':');
    if (colon != std::string::npos && e.find(':', colon + 1) != std::string::npos)
      return make_error("config", "etcd endpoint " + e + ": an IPv6 address goes in brackets ([::1]:2379)");
    host = e.substr(0, colon);
    if (colon != std::string::npos) {
      port = e.substr(colon + 1);
      if (port.empty()) return make_error("config", "etcd endpoint " + e + ": empty port");
    }
    if (host.find_first_of("[]") != std::string::npos)
      return make_error("config", "etcd endpoint " + e + ": stray bracket");
  }
  if (host.empty()) return make_error("config", "etcd endpoint " + e + ": no host");
  int p = kDefaultPort;
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
      return make_error("config", "etcd endpoint " + e + ": bad port");
    p = std::stoi(port);
    if (p < 1 || p > 65535) return make_error("config", "etcd endpoint " + e + ": port out of range");
  }
  return host + ":" + std::to_string(p);
}

}  // namespace

Expected<ClientConfig> parse_store_uri(const std::string& uri) {
  const std::string scheme = "etcd://";
  if (uri.rfind(scheme, 0) != 0) return make_error("config", "an etcd store is etcd://host:port[,host:port...]");
  const std::string rest = uri.substr(scheme.size());
  if (rest.empty()) return make_error("config", "etcd:// names no host");
  if (rest.size() > 4096) return make_error("config", "etcd endpoint list too long");
  ClientConfig cfg;
  size_t start = 0;
  while (start <= rest.size()) {
    const auto comma = rest.find(',', start);
    const std::string part = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    auto ep = parse_endpoint(part);
    if (!ep) return ep.error();
    cfg.endpoints.push_back(std::move(*ep));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return cfg;
}

std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(end.back());
    if (c < 0xff) {
      ++c;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key (etcd: range_end "\0" with key "\0")
}

Op Op::put(std::string k, std::string v, int64_t lease) {
  Op o;
  o.kind = Kind::kPut;
  o.key = std::move(k);
  o.value = std::move(v);
  o.lease = lease;
  return o;
}

Op Op::del(std::string k, std::string range_end) {
  Op o;
  o.kind = Kind::kDelete;
  o.key = std::move(k);
  o.range_end = std::move(range_end);
  return o;
}

Op Op::get(std::string k, std::string range_end, int64_t limit) {
  Op o;
  o.kind = Kind::kGet;
  o.key = std::move(k);
  o.range_end = std::move(range_end);
  o.limit = limit;
  return o;
}

}  // namespace gantry::etcd
