#include "coordinator/ha/etcd_peer_endpoints.h"

#include "common/util/log.h"
#include "common/util/text.h"
#include "coordinator/ha/registered_members.h"

namespace gantry::coordinator::ha {

EtcdPeerEndpoints::EtcdPeerEndpoints(etcd::Client& client, std::string prefix, std::string own_name)
    : client_(client), prefix_(std::move(prefix)), own_(std::move(own_name)) {}

std::vector<std::string> EtcdPeerEndpoints::operator_endpoints() {
  auto members = registered_members(client_, prefix_);
  std::vector<std::string> out;
  if (!members) {
    log::get("peer")->warn("cannot list the peer coordinators: {}", safe_text(members.error().message, 300));
    return out;
  }
  for (const auto& m : *members)
    if (m.name != own_) out.push_back(m.operator_ep);
  return out;
}

}  // namespace gantry::coordinator::ha
