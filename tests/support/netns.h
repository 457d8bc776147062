// Network-namespace lab for tests and benchmarks: N namespaces, each with one veth link to a
// bridge that lives in a namespace of its own, addresses from 198.18.0.0/15 (RFC 2544 benchmark
// range, never routed), and a way to partition one namespace by taking its link down.
//
//   NetnsLab lab(7);                       // gtst-<pid>-<k>-0 .. -6, 198.18.0.1 .. 198.18.0.7
//   Process p(lab.wrap(0, {"gantry-coordinator", ...}), log);   // runs inside namespace 0
//   lab.link_down(3); ... lab.link_up(3);  // partition / heal namespace 3
//   lab.http_get(3, 8080, "/")             // from inside namespace 3 (its own 127.0.0.1)
//
// Needs root and iproute2 (`ip netns`); available() says why not. Every namespace is removed
// in the destructor (processes still inside are SIGKILLed first), also when a test fails;
// sweep_stale_namespaces() removes those left behind by a process that died (its pid is in the
// name), and every NetnsLab constructor runs it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tests/support/fleet.h"

namespace gantry::testing {

// "" when namespaces can be made here; otherwise why not (not root, no `ip`, no netns support).
std::string netns_unavailable_reason();

// Deletes namespaces named "<prefix><pid>-..." whose pid is no longer running (killing what
// still runs inside them). Returns how many were removed.
int sweep_stale_namespaces(const std::string& prefix = "gtst-");

class NetnsLab {
 public:
  // Creates n namespaces plus a bridge namespace. Throws std::runtime_error (with the failing
  // command's output) if any step fails; what was made so far is removed.
  explicit NetnsLab(int n, const std::string& prefix = "gtst-");
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  int size() const { return static_cast<int>(names_.size()); }
  // Namespace name of member i.
  const std::string& name(int i) const;
  // Its address on the lab network ("198.18.0.<i+1>"); /16 on its interface "eth0".
  std::string address(int i) const;
  // argv run inside namespace i: {"ip", "netns", "exec", name(i), argv...}.
  std::vector<std::string> wrap(int i, const std::vector<std::string>& argv) const;
  // Partition: take member i's link down at the bridge (its own side keeps its address, so
  // processes inside see a silent network, as with a cable pulled at the switch). And back.
  void link_down(int i);
  void link_up(int i);
  // GET http://127.0.0.1:<port><path> from inside namespace i (see gantry::testing::http_get).
  std::optional<HttpResult> http_get(int i, int port, const std::string& path, int timeout_ms = 1000) const;

 private:
  void ip(const std::vector<std::string>& args);
  void remove_all() noexcept;
  void check(int i) const;

  std::string base_;    // "<prefix><pid>-<serial>-"
  std::string bridge_;  // namespace holding the bridge
  std::vector<std::string> names_;
};

}  // namespace gantry::testing
