#include "coordinator/ha/registered_members.h"

namespace gantry::coordinator::ha {

Expected<std::vector<MemberInfo>> registered_members(etcd::Client& client, const std::string& prefix) {
  const std::string p = prefix + "members/";
  auto r = client.range(p, etcd::prefix_end(p), kMaxMembers);
  if (!r) return r.error();
  std::vector<MemberInfo> out;
  for (const auto& kv : r->kvs) {
    auto m = MemberInfo::from_json(kv.value);
    if (m) out.push_back(std::move(*m));
  }
  return out;
}

}  // namespace gantry::coordinator::ha
