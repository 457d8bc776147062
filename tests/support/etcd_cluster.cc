#include "tests/support/etcd_cluster.h"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <thread>

namespace gantry::testing {

namespace {

std::string tail_of(const std::string& text, size_t max_bytes) {
  return text.size() <= max_bytes ? text : "..." + text.substr(text.size() - max_bytes);
}

}  // namespace

EtcdCluster::EtcdCluster(int members, EtcdClusterOptions opts) : opts_(std::move(opts)), dir_("gantry-etcd") {
  if (members != 1 && members != 3)
    throw std::runtime_error("EtcdCluster: 1 or 3 members, not " + std::to_string(members));
  const int hooks = (opts_.host ? 1 : 0) + (opts_.wrap ? 1 : 0) + (opts_.http_get ? 1 : 0);
  if (hooks != 0 && (hooks != 3 || opts_.tls))
    throw std::runtime_error("EtcdCluster: host, wrap and http_get go together, and not with tls");
  if (::access(opts_.etcd_binary.c_str(), X_OK) != 0)
    throw std::runtime_error("EtcdCluster: " + opts_.etcd_binary + " not found (install etcd-server)");
  for (int i = 0; i < members; ++i) {
    Member m;
    m.name = "m" + std::to_string(i);
    members_.push_back(std::move(m));
  }
  if (opts_.tls) make_certificates();
  // A free port can be taken by another process (a test running in parallel) before etcd binds
  // it: then the cluster starts again on other ports, with empty data dirs (at most 3 times).
  for (int attempt = 1;; ++attempt) {
    std::set<int> ports;
    for (auto& m : members_) {
      do m.client_port = free_tcp_port();
      while (!ports.insert(m.client_port).second);
      do m.peer_port = free_tcp_port();
      while (!ports.insert(m.peer_port).second);
    }
    for (int i = 0; i < size(); ++i) launch(i);
    try {
      wait_healthy();
      return;
    } catch (const std::runtime_error&) {
      bool port_taken = false;
      for (int i = 0; i < size(); ++i)
        port_taken = port_taken || read_file(log_path(i)).find("address already in use") != std::string::npos;
      if (attempt >= 3 || !port_taken) throw;
    }
    for (int i = 0; i < size(); ++i) {
      kill(i);
      std::filesystem::remove_all(dir_.sub(members_[static_cast<size_t>(i)].name + ".etcd"));
      std::filesystem::remove(log_path(i));
    }
  }
}

// A throwaway CA signing a server certificate (IP 127.0.0.1) and a client certificate.
void EtcdCluster::make_certificates() {
  const std::string ext = dir_.sub("ext.cnf");
  {
    std::ofstream f(ext);
    f << "[server]\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
      << "[client]\nextendedKeyUsage=clientAuth\n";
  }
  auto openssl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "openssl");
    auto r = run(args, 60000);
    if (r.exit_code != 0) throw std::runtime_error("EtcdCluster: openssl " + args.at(1) + " failed: " + r.err);
  };
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
  auto req = [&](const std::string& name, const std::string& cn) {
    std::vector<std::string> a = {"req"};
    a.insert(a.end(), ec.begin(), ec.end());
    a.insert(a.end(), {"-keyout", dir_.sub(name + ".key"), "-out", dir_.sub(name + ".csr"), "-subj", "/CN=" + cn});
    openssl(a);
    openssl({"x509", "-req", "-in", dir_.sub(name + ".csr"), "-CA", ca_file(), "-CAkey", dir_.sub("ca.key"),
             "-CAcreateserial", "-out", dir_.sub(name + ".pem"), "-days", "2", "-extfile", ext, "-extensions", name});
  };
  std::vector<std::string> ca = {"req", "-x509"};
  ca.insert(ca.end(), ec.begin(), ec.end());
  ca.insert(ca.end(), {"-keyout", dir_.sub("ca.key"), "-out", ca_file(), "-days", "2", "-subj", "/CN=gantry-test-ca"});
  openssl(ca);
  req("server", "127.0.0.1");
  req("client", "gantry-test-client");
}

EtcdCluster::~EtcdCluster() {
  for (auto& m : members_) m.proc.kill_and_reap();
}

std::string EtcdCluster::host(int i) const { return opts_.host ? opts_.host(i) : "127.0.0.1"; }

int EtcdCluster::client_port(int i) const { return members_.at(static_cast<size_t>(i)).client_port; }

std::string EtcdCluster::endpoint(int i) const { return host(i) + ":" + std::to_string(client_port(i)); }

std::vector<std::string> EtcdCluster::endpoint_list() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) out.push_back(endpoint(i));
  return out;
}

std::string EtcdCluster::endpoints() const {
  std::string out;
  for (int i = 0; i < size(); ++i) out += (i ? "," : "") + endpoint(i);
  return out;
}

std::string EtcdCluster::log_path(int i) const { return dir_.sub(members_.at(static_cast<size_t>(i)).name + ".log"); }

std::string EtcdCluster::initial_cluster() const {
  std::string out;
  for (int i = 0; i < size(); ++i) {
    const auto& m = members_[static_cast<size_t>(i)];
    out += (out.empty() ? "" : ",") + m.name + "=http://" + host(i) + ":" + std::to_string(m.peer_port);
  }
  return out;
}

void EtcdCluster::launch(int i) {
  auto& m = members_.at(static_cast<size_t>(i));
  const std::string client = (opts_.tls ? "https://" : "http://") + endpoint(i);
  // In a namespace also on its own loopback, where http_get probes its health.
  const std::string listen_client = opts_.host ? client + ",http://127.0.0.1:" + std::to_string(m.client_port) : client;
  const std::string peer = "http://" + host(i) + ":" + std::to_string(m.peer_port);
  std::vector<std::string> argv = {opts_.etcd_binary,
                                   "--name",
                                   m.name,
                                   "--data-dir",
                                   dir_.sub(m.name + ".etcd"),
                                   "--listen-client-urls",
                                   listen_client,
                                   "--advertise-client-urls",
                                   client,
                                   "--listen-peer-urls",
                                   peer,
                                   "--initial-advertise-peer-urls",
                                   peer,
                                   "--initial-cluster",
                                   initial_cluster(),
                                   "--initial-cluster-state",
                                   "new",
                                   "--initial-cluster-token",
                                   "gantry-test-" + std::to_string(::getpid()),
                                   "--max-txn-ops",
                                   std::to_string(opts_.max_txn_ops),
                                   "--max-request-bytes",
                                   std::to_string(opts_.max_request_bytes),
                                   "--heartbeat-interval",
                                   std::to_string(opts_.heartbeat_ms),
                                   "--election-timeout",
                                   std::to_string(opts_.election_timeout_ms),
                                   "--logger",
                                   "zap",
                                   "--log-level",
                                   "warn"};
  if (opts_.tls) {
    argv.insert(argv.end(), {"--cert-file", dir_.sub("server.pem"), "--key-file", dir_.sub("server.key"),
                             "--trusted-ca-file", ca_file()});
    if (opts_.client_cert_auth) argv.push_back("--client-cert-auth");
  }
  m.proc = Process(opts_.wrap ? opts_.wrap(i, argv) : argv, log_path(i));
  m.wanted = true;
}

void EtcdCluster::kill(int i) {
  auto& m = members_.at(static_cast<size_t>(i));
  m.wanted = false;
  m.proc.kill_and_reap();
}

bool EtcdCluster::running(int i) { return members_.at(static_cast<size_t>(i)).proc.alive(); }

void EtcdCluster::start(int i) {
  if (running(i)) return;
  launch(i);
  int up = 0;
  for (int j = 0; j < size(); ++j) up += running(j) ? 1 : 0;
  if (up * 2 > size()) wait_healthy();
}

void EtcdCluster::restart(int i) {
  kill(i);
  start(i);
}

bool EtcdCluster::healthy(int i, int timeout_ms) const {
  if (opts_.tls) {  // asked over TLS by etcd's own client
    auto r = run({"etcdctl", "--endpoints", "https://" + endpoint(i), "--cacert", ca_file(), "--cert",
                  client_cert_file(), "--key", client_key_file(), "--dial-timeout", std::to_string(timeout_ms) + "ms",
                  "--command-timeout", std::to_string(timeout_ms) + "ms", "endpoint", "health"},
                 timeout_ms + 5000, {{"ETCDCTL_API", "3"}});
    return r.exit_code == 0;
  }
  const int port = members_.at(static_cast<size_t>(i)).client_port;
  auto r = opts_.http_get ? opts_.http_get(i, port, "/health", timeout_ms) : http_get(port, "/health", timeout_ms);
  return r && r->status == 200 && r->body.find("\"health\":\"true\"") != std::string::npos;
}

int EtcdCluster::raft_leader() const {
  for (int i = 0; i < size(); ++i) {
    auto r = run({"etcdctl", "--endpoints", "http://" + endpoint(i), "--dial-timeout", "1s", "--command-timeout", "2s",
                  "endpoint", "status", "-w", "json"},
                 10000, {{"ETCDCTL_API", "3"}});
    if (r.exit_code != 0) continue;
    try {
      const auto j = nlohmann::json::parse(r.out);
      const auto& st = j.at(0).at("Status");
      if (st.at("header").at("member_id").get<uint64_t>() == st.at("leader").get<uint64_t>()) return i;
    } catch (const std::exception&) {
      continue;
    }
  }
  return -1;
}

void EtcdCluster::wait_healthy() {
  const bool ok = wait_until(
      [&] {
        for (int i = 0; i < size(); ++i) {
          if (!running(i)) {
            // A member that exited by itself (its port taken meanwhile, a bad flag) never will.
            if (members_[static_cast<size_t>(i)].wanted)
              throw std::runtime_error("EtcdCluster: etcd " + members_[static_cast<size_t>(i)].name + " exited\n" +
                                       diagnostics());
            continue;
          }
          if (!healthy(i)) return false;
        }
        return true;
      },
      opts_.start_timeout_ms, 100);
  if (!ok)
    throw std::runtime_error("EtcdCluster: not healthy within " + std::to_string(opts_.start_timeout_ms) + " ms\n" +
                             diagnostics());
}

std::string EtcdCluster::diagnostics(size_t max_bytes_per_log) const {
  std::string out;
  for (int i = 0; i < size(); ++i)
    out += "--- etcd " + members_.at(static_cast<size_t>(i)).name + " (" + endpoint(i) + ") log:\n" +
           tail_of(read_file(log_path(i)), max_bytes_per_log) + "\n";
  return out;
}

}  // namespace gantry::testing
