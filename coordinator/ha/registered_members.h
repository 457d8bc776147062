// The coordinators registered now: the records under <prefix>members/ (leader_election.h), read
// from etcd as hostile input (MemberInfo::from_json; a record that is not valid is skipped).
#pragma once

#include <string>
#include <vector>

#include "common/util/expected.h"
#include "coordinator/etcd/etcd_client.h"
#include "coordinator/ha/member_info.h"

namespace gantry::coordinator::ha {

inline constexpr int64_t kMaxMembers = 64;  // records read; an installation runs three or five

// In key order (by name); an Error when etcd cannot be read.
Expected<std::vector<MemberInfo>> registered_members(etcd::Client& client, const std::string& prefix);

}  // namespace gantry::coordinator::ha
