// Which releases the agent may install: the trusted ed25519 release public keys, and the signed
// manifests that already verified with them. An order for a release ordered before (a rollback,
// a re-deploy: the local swap) skips the ed25519 check, whose answer for the same bytes and keys
// cannot change; each order is still matched against its manifest (release::check_matches).
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <vector>

#include "common/protocol/messages.h"
#include "common/release/manifest.h"
#include "common/util/expected.h"

namespace gantry::agent {

class ReleaseSignatures {
 public:
  // Trusted release public keys (raw 32 bytes); forgets what verified with the previous ones.
  void set_keys(std::vector<std::string> keys);
  // Ok without keys (insecure_dev: unsigned allowed). Otherwise the order must carry a manifest
  // signed by one of the keys that matches its service, version, digest and size.
  Status check(const proto::Order& o);

 private:
  std::vector<std::string> keys_;
  // Exact manifest and signature bytes that verified with keys_, most recent last, at most kKept.
  struct Verified {
    std::string manifest, signature;
    release::Manifest parsed;
  };
  static constexpr size_t kKept = 8;
  std::deque<Verified> verified_;
};

}  // namespace gantry::agent
