// Which releases the agent may install (agent/core/release_signatures.h).
#include "agent/core/release_signatures.h"

#include <utility>

namespace gantry::agent {

void ReleaseSignatures::set_keys(std::vector<std::string> keys) {
  keys_ = std::move(keys);
  verified_.clear();  // verified with the previous keys
}

Status ReleaseSignatures::check(const proto::Order& o) {
  if (keys_.empty()) return Status::Ok();  // insecure_dev without release keys: unsigned allowed
  const release::Manifest* m = nullptr;
  for (auto it = verified_.begin(); it != verified_.end(); ++it) {
    if (it->signature == o.signature && it->manifest == o.manifest) {
      m = &it->parsed;
      break;
    }
  }
  if (!m) {
    auto checked = release::verify(o.manifest, o.signature, keys_);
    if (!checked) return checked.error();
    if (verified_.size() >= kKept) verified_.pop_front();
    verified_.push_back({o.manifest, o.signature, std::move(*checked)});
    m = &verified_.back().parsed;
  }
  // The fetcher reads exactly o.size bytes and the digest is checked against o.sha256, so
  // binding both to the signed manifest bounds and pins what gets installed.
  return release::check_matches(*m, o.service, o.version, o.sha256, o.size);
}

}  // namespace gantry::agent
