#include "coordinator/ha/etcd_peer_endpoints.h"

#include "common/util/log.h"
#include "common/util/text.h"
#include "coordinator/ha/member_info.h"

namespace gantry::coordinator::ha {

EtcdPeerEndpoints::EtcdPeerEndpoints(etcd::Client& client, std::string prefix, std::string own_name)
    : client_(client), prefix_(std::move(prefix)), own_(std::move(own_name)) {}

std::vector<std::string> EtcdPeerEndpoints::operator_endpoints() {
  const std::string p = prefix_ + "members/";
  auto r = client_.range(p, etcd::prefix_end(p), 64);
  std::vector<std::string> out;
  if (!r) {
    log::get("peer")->warn("cannot list the peer coordinators: {}", safe_text(r.error().message, 300));
    return out;
  }
  for (const auto& kv : r->kvs) {
    auto m = MemberInfo::from_json(kv.value);
    if (m && m->name != own_) out.push_back(m->operator_ep);
  }
  return out;
}

}  // namespace gantry::coordinator::ha
