// A real etcd cluster for tests: 1 or 3 members of Debian's /usr/bin/etcd (etcd-server 3.4) on
// 127.0.0.1 with free client and peer ports, each with its own data dir and log under one temp
// dir. The destructor SIGKILLs every member still running and removes the temp dir (see
// GANTRY_KEEP_TEST_DIRS), also when the test failed. Setup failures (etcd missing, a member not
// healthy in time) throw std::runtime_error with the members' log tails; gtest reports that.
//
// Typical use:
//   gantry::testing::EtcdCluster etcd(3);            // started, healthy
//   auto store = open_store(etcd.uri());             // "etcd://127.0.0.1:P1,127.0.0.1:P2,..."
//   etcd.kill(0);                                    // SIGKILL member 0: the other two keep quorum
//   etcd.stop(1);                                    // quorum lost (members 0 and 1 down)
//   etcd.start(1); etcd.start(0);                    // back, with their data (same ports)
//   etcd.wait_healthy();                             // every running member has a leader
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/fleet.h"

namespace gantry::testing {

struct EtcdClusterOptions {
  // What one transaction may hold: a 10,000-host rollout step is one transaction of some
  // 20,000-40,000 operations and a few MiB (docs/HIGH_AVAILABILITY.md, "Transactions and limits").
  int max_txn_ops = 100000;
  int64_t max_request_bytes = 32LL * 1024 * 1024;
  int start_timeout_ms = 30000;  // per (re)start, until healthy
  // Raft timing (etcd's defaults: 100 ms / 1000 ms).
  int heartbeat_ms = 100;
  int election_timeout_ms = 1000;
  std::string etcd_binary = "/usr/bin/etcd";
  // TLS on the client URLs: a CA, a server certificate for IP 127.0.0.1 and a client
  // certificate made with openssl in the cluster's dir (ca_file() etc.). With client_cert_auth
  // the members accept only clients with a certificate of that CA.
  bool tls = false;
  bool client_cert_auth = false;
  // Members in network namespaces (tests/support/netns.h), all three set or none: member i
  // listens on host(i) (peer and client URLs; its client port also on the 127.0.0.1 of its own
  // namespace, for the health probe), runs as wrap(i, argv), and is probed with
  // http_get(i, port, path, timeout_ms). Unset: every member on this process's 127.0.0.1. Not
  // with tls (the certificates name 127.0.0.1).
  std::function<std::string(int member)> host;
  std::function<std::vector<std::string>(int member, const std::vector<std::string>& argv)> wrap;
  std::function<std::optional<HttpResult>(int member, int port, const std::string& path, int timeout_ms)> http_get;
};

class EtcdCluster {
 public:
  // Starts `members` members (1 or 3) and waits until every one is healthy.
  explicit EtcdCluster(int members = 3, EtcdClusterOptions opts = {});
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  // "127.0.0.1:P" (or "<host(i)>:P") of member i's client URL; every member's, comma-separated;
  // as a --store URI.
  std::string endpoint(int i) const;
  int client_port(int i) const;
  std::vector<std::string> endpoint_list() const;
  std::string endpoints() const;
  std::string uri() const { return "etcd://" + endpoints(); }
  const std::string& dir() const { return dir_.path(); }
  std::string log_path(int i) const;
  // With opts.tls: PEM files for etcd::ClientConfig (ca_file, cert_file, key_file).
  std::string ca_file() const { return dir_.sub("ca.pem"); }
  std::string client_cert_file() const { return dir_.sub("client.pem"); }
  std::string client_key_file() const { return dir_.sub("client.key"); }

  // SIGKILL member i (and reap it); its data dir is kept. No-op when it is not running.
  void kill(int i);
  // stop(): the same as kill(); named for the quorum tests that bring members back with start().
  void stop(int i) { kill(i); }
  // Starts member i again on its ports with its data dir; waits until it is healthy when the
  // cluster can have a quorum (a majority running), else returns once it was started.
  void start(int i);
  // kill(i) then start(i).
  void restart(int i);
  bool running(int i);
  // Whether member i answers /health with {"health":"true"} (it has a leader) within timeout_ms.
  bool healthy(int i, int timeout_ms = 1000) const;
  // The member that is raft leader now (asked with `etcdctl endpoint status`), -1 when none
  // answers that it is (plain-text clusters only).
  int raft_leader() const;
  // Waits until every running member is healthy; throws with the logs when not within the
  // start timeout.
  void wait_healthy();
  // The members' log tails, for failure messages.
  std::string diagnostics(size_t max_bytes_per_log = 4096) const;

 private:
  struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    bool wanted = false;  // started by us and not killed since: its exit is a failure
    Process proc;
  };
  void launch(int i);
  void make_certificates();
  std::string initial_cluster() const;
  std::string host(int i) const;

  EtcdClusterOptions opts_;
  TempDir dir_;
  std::vector<Member> members_;
};

}  // namespace gantry::testing
