// The coordinator's settings, as main() hands them to the Coordinator: the endpoints it binds,
// its heartbeat and resend periods, and the keys it starts with.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/transport/zmq_transport.h"

namespace gantry::coordinator {

struct Config {
  std::string state_dir = "/var/lib/gantry";
  std::string agent_endpoint = "tcp://127.0.0.1:7600";
  std::string pub_endpoint = "tcp://127.0.0.1:7601";
  std::string operator_endpoint = "tcp://127.0.0.1:7602";
  std::string http_address = "127.0.0.1:7680";  // empty: no HTTP
  uint32_t heartbeat_interval_ms = 1000;        // agents heartbeat this often; silent misses x this: unknown
  uint32_t heartbeat_misses = 3;
  // How often the coordinator itself must be heard from by agents that support it (announced
  // in Welcome; they give it up after misses x this). A heartbeat goes to such an agent only
  // when nothing else was sent to it for this long, so at rest the coordinator mostly listens.
  // 0: heartbeat every agent every heartbeat_interval_ms (the protocol's original behaviour).
  uint32_t coordinator_heartbeat_ms = 10000;
  uint32_t order_resend_ms = 2000;  // unacknowledged orders are resent this often
  // After a restart, hosts known from the store count as reachable this long (or the heartbeat
  // timeout, if longer) before silence makes them unknown: a large fleet needs seconds to
  // reconnect over CURVE (docs/BENCHMARKS.md, figure 4), and a rollout must not count its hosts
  // as lost meanwhile.
  uint32_t restart_grace_ms = 30000;
  // libzmq I/O threads (CURVE handshakes, TCP reads and writes happen there). With 2 or more,
  // the PUB socket's subscribers are spread over all but the first (ZMQ_AFFINITY), so a
  // broadcast's writes run on more than one core and do not queue agent and operator replies
  // behind them; the agent and operator sockets use any (least loaded). 3 by default: a faster
  // rollback fan-out and no slower reconnect storm than with one (docs/BENCHMARKS.md, figures 1
  // and 4).
  uint32_t io_threads = 3;
  // Where agent heartbeats may arrive as UDP datagrams (common/transport/udp_heartbeat.h):
  // "auto" binds the agent endpoint's address and port number for UDP (a free port if that
  // one is taken), "off" keeps every heartbeat on the agents' connections, or HOST:PORT.
  std::string udp_heartbeat = "auto";
  bool insecure_dev = false;
  transport::CurveOptions curve;  // server keys; empty with insecure_dev
  // Bootstrap of the allowlists (kept in the store): operators (name, Z85 public key) made
  // admin at start, and agent keys (host id, Z85 public key) accepted at start.
  std::vector<std::pair<std::string, std::string>> admin_keys;
  std::vector<std::pair<std::string, std::string>> accept_agent_keys;
  // Prometheus servers the plans' metric analysis may name (name -> http://HOST:PORT[/PREFIX]).
  std::map<std::string, std::string> prometheus;

  // Where the durable record is (docs/HIGH_AVAILABILITY.md): "sqlite", the state directory's
  // coordinator.db, for one coordinator; or "etcd://HOST:PORT,HOST:PORT,...", shared by
  // coordinators that elect one leader and keep the others as standbys.
  std::string store = "sqlite";
  std::string etcd_ca, etcd_cert, etcd_key;  // PEM files for etcd's TLS (empty: plain text)
  std::string etcd_prefix = "/gantry/";      // every key of this installation starts with it
  std::string name;                          // this coordinator among its peers (default: the host name)
  uint32_t lease_ttl_s = 5;                  // the leader's etcd lease; a standby takes over within it
  // The host other processes reach this coordinator's endpoints at, told to agents and operators
  // by standbys and peers (default: the bound address, 127.0.0.1 for a wildcard one).
  std::string advertise_host;
  bool etcd() const { return store != "sqlite"; }
};

}  // namespace gantry::coordinator
