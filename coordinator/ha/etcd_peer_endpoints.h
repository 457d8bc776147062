// The other coordinators of an installation on etcd, for the peer artifact fetcher
// (server/peer_endpoints.h): the operator endpoints of the members registered under
// <prefix>members/ (leader_election.h), this coordinator's own left out. Read from etcd at each
// call (a fetch is rare); a record that is not valid is skipped (MemberInfo::from_json).
#pragma once

#include <string>
#include <vector>

#include "coordinator/etcd/etcd_client.h"
#include "coordinator/server/peer_endpoints.h"

namespace gantry::coordinator::ha {

class EtcdPeerEndpoints final : public PeerEndpoints {
 public:
  EtcdPeerEndpoints(etcd::Client& client, std::string prefix, std::string own_name);
  std::vector<std::string> operator_endpoints() override;

 private:
  etcd::Client& client_;
  const std::string prefix_;
  const std::string own_;
};

}  // namespace gantry::coordinator::ha
