// Where the other coordinators of an installation take operator requests: the peers an
// artifact this coordinator lacks is fetched from (peer_artifact_fetcher.h).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace gantry::coordinator {

class PeerEndpoints {
 public:
  virtual ~PeerEndpoints() = default;
  // The operator endpoints (tcp://HOST:PORT) of the other coordinators, in the order to try
  // them. Called on the fetcher's worker thread, once per fetch (so a slow lookup never stalls
  // the coordinator's loop): it must be safe to call from a thread other than its owner's. The
  // values may come from outside (etcd): the fetcher checks each before connecting. This
  // coordinator's own endpoint may be in the list (it answers not_found and the next is tried).
  virtual std::vector<std::string> operator_endpoints() = 0;
};

// A list fixed at construction (tests; a static set of coordinators).
class FixedPeerEndpoints final : public PeerEndpoints {
 public:
  explicit FixedPeerEndpoints(std::vector<std::string> endpoints) : endpoints_(std::move(endpoints)) {}
  std::vector<std::string> operator_endpoints() override { return endpoints_; }

 private:
  std::vector<std::string> endpoints_;
};

}  // namespace gantry::coordinator
