// What a standby coordinator serves while another one leads (docs/HIGH_AVAILABILITY.md): it
// binds the same endpoints a leader would, decides nothing and writes nothing, and
//  - answers an agent's Hello (and anything else an agent sends) with Error "not_leader" and
//    the leader's endpoints, so the agent goes there;
//  - answers the operator command `status` read-only from the store (role "standby", the
//    leader, recent rollouts, hosts as last recorded) and every other command with a
//    "not_leader" error naming the leader, so the CLI retries there;
//  - serves /status the same way and /metrics with gantry_coordinator_leader 0;
//  - copies every release it lacks from its peers (the leader among them).
// CURVE and the key allowlists apply as on the leader (ZAP from the store's keys, reloaded
// every few seconds).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/util/clock.h"
#include "common/util/expected.h"
#include "coordinator/ha/member_info.h"
#include "coordinator/server/config.h"
#include "coordinator/server/metrics.h"

namespace gantry::store {
class Store;
}

namespace gantry::coordinator {
class ArtifactStore;
class HttpServer;
class KeyRing;
class ArtifactCopies;
class PeerArtifactFetcher;
class PeerEndpoints;
class PeerPrefetch;
class RefusalLog;
class ZapAuth;
}  // namespace gantry::coordinator

namespace gantry::coordinator::ha {

class StandbyServer {
 public:
  // `store` is read only: the standby never writes (the etcd store it is given is fenced on a
  // leadership it does not hold, so a write would fail anyway).
  // `peers`: where the releases this coordinator lacks are copied from, a few seconds after
  // their upload (server/peer_prefetch.h), so it has them when it comes to lead; `copies`:
  // where it records the ones it holds (the leader acknowledges an upload once all hold it).
  StandbyServer(const Config& cfg, Clock& clock, store::Store& store, std::string name, PeerEndpoints& peers,
                ArtifactCopies& copies);
  ~StandbyServer();

  // Binds the agent and operator endpoints and HTTP; the endpoints actually bound.
  Status start();
  const std::map<std::string, std::string>& endpoints() const { return endpoints_; }
  // Who leads now (nullopt: nobody known), as the election last read it.
  void set_leader(std::optional<MemberInfo> leader);
  // Serves for up to `ms` milliseconds (one poll and what it found).
  void serve_for(Millis ms);

 private:
  void serve_agents();
  void serve_operators();
  nlohmann::json status_json();
  std::map<std::string, std::string> leader_map() const;
  std::string leader_text() const;

  Config cfg_;
  Clock& clock_;
  store::Store& store_;
  std::string name_;
  PeerEndpoints& peers_;
  ArtifactCopies& copies_;
  zmq::context_t ctx_;
  Metrics metrics_;
  std::unique_ptr<KeyRing> keys_;
  std::unique_ptr<RefusalLog> refusals_;
  std::unique_ptr<ZapAuth> zap_;
  std::unique_ptr<zmq::socket_t> agents_, operators_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<PeerArtifactFetcher> fetcher_;
  std::unique_ptr<PeerPrefetch> prefetch_;
  std::map<std::string, std::string> endpoints_;
  mutable std::mutex mu_;  // leader_, shared with the HTTP threads
  std::optional<MemberInfo> leader_;
  Millis next_key_reload_ = 0;
  Millis next_status_ = 0;
  std::string status_text_;  // under mu_: rebuilt on the loop once a second, served by HTTP
};

}  // namespace gantry::coordinator::ha
