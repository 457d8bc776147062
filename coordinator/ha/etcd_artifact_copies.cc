#include "coordinator/ha/etcd_artifact_copies.h"

#include <algorithm>
#include <set>

#include "common/util/names.h"
#include "coordinator/ha/member_info.h"

namespace gantry::coordinator::ha {

namespace {
constexpr int64_t kMaxMembers = 64;  // as the peer list (etcd_peer_endpoints.cc)
}

EtcdArtifactCopies::EtcdArtifactCopies(etcd::Client& client, std::string prefix, std::string own_name)
    : client_(client), prefix_(std::move(prefix)), own_(std::move(own_name)) {}

std::string EtcdArtifactCopies::key(const std::string& sha256) const {
  return prefix_ + "copies/" + sha256 + "/" + own_;
}

Status EtcdArtifactCopies::record_held(const std::string& sha256) {
  if (!is_sha256_hex(sha256)) return make_error("invalid", "not a sha256: cannot record a copy");
  auto t = client_.txn({}, {etcd::Op::put(key(sha256), "")});
  if (!t) return t.error();
  return Status::Ok();
}

Status EtcdArtifactCopies::record_lacking(const std::string& sha256) {
  if (!is_sha256_hex(sha256)) return make_error("invalid", "not a sha256: cannot record a copy");
  auto t = client_.txn({}, {etcd::Op::del(key(sha256))});
  if (!t) return t.error();
  return Status::Ok();
}

Expected<ArtifactCopies::Holders> EtcdArtifactCopies::holders(const std::string& sha256) {
  if (!is_sha256_hex(sha256)) return make_error("invalid", "not a sha256");
  const std::string mp = prefix_ + "members/";
  auto members = client_.range(mp, etcd::prefix_end(mp), kMaxMembers);
  if (!members) return members.error();
  const std::string cp = prefix_ + "copies/" + sha256 + "/";
  auto copies = client_.range(cp, etcd::prefix_end(cp), 0, /*keys_only=*/true);
  if (!copies) return copies.error();
  // Only names of registered members count, so whatever else is under the prefix (a record of a
  // coordinator long gone, a key someone wrote by hand) is never shown or counted.
  std::set<std::string> held;
  for (const auto& kv : copies->kvs)
    if (kv.key.size() > cp.size()) held.insert(kv.key.substr(cp.size()));
  Holders h;
  for (const auto& kv : members->kvs) {
    auto m = MemberInfo::from_json(kv.value);
    if (!m) continue;
    (held.count(m->name) ? h.on : h.waiting_for).push_back(m->name);
  }
  std::sort(h.on.begin(), h.on.end());
  std::sort(h.waiting_for.begin(), h.waiting_for.end());
  return h;
}

}  // namespace gantry::coordinator::ha
