#include "coordinator/ha/etcd_artifact_copies.h"

#include <algorithm>
#include <set>

#include "common/util/names.h"
#include "coordinator/ha/registered_members.h"

namespace gantry::coordinator::ha {

EtcdArtifactCopies::EtcdArtifactCopies(etcd::Client& client, std::string prefix, std::string own_name)
    : client_(client), prefix_(std::move(prefix)), own_(std::move(own_name)) {}

std::string EtcdArtifactCopies::key(const std::string& sha256) const {
  return prefix_ + "copies/" + sha256 + "/" + own_;
}

Status EtcdArtifactCopies::record(const std::vector<std::string>& held, const std::vector<std::string>& lacking) {
  constexpr size_t kOpsPerTxn = 100;
  std::vector<etcd::Op> ops;
  const auto flush = [&]() -> Status {
    if (ops.empty()) return Status::Ok();
    auto t = client_.txn({}, ops);
    ops.clear();
    if (!t) return t.error();
    return Status::Ok();
  };
  for (const auto* list : {&held, &lacking}) {
    for (const auto& sha : *list) {
      if (!is_sha256_hex(sha)) return make_error("invalid", "not a sha256: cannot record a copy");
      ops.push_back(list == &held ? etcd::Op::put(key(sha), "") : etcd::Op::del(key(sha)));
      if (ops.size() >= kOpsPerTxn)
        if (auto s = flush(); !s.ok()) return s;
    }
  }
  return flush();
}

Expected<ArtifactCopies::Holders> EtcdArtifactCopies::holders(const std::string& sha256) {
  if (!is_sha256_hex(sha256)) return make_error("invalid", "not a sha256");
  auto members = registered_members(client_, prefix_);
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
  for (const auto& m : *members) (held.count(m.name) ? h.on : h.waiting_for).push_back(m.name);
  std::sort(h.on.begin(), h.on.end());
  std::sort(h.waiting_for.begin(), h.waiting_for.end());
  return h;
}

}  // namespace gantry::coordinator::ha
