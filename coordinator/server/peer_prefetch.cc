#include "coordinator/server/peer_prefetch.h"

#include <algorithm>

#include "common/util/log.h"
#include "common/util/names.h"
#include "common/util/text.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* LP() {
  static const auto l = log::get("peer");
  return l.get();
}
}  // namespace

PeerPrefetch::PeerPrefetch(store::Store& store, const ArtifactStore& artifacts, MissingArtifacts& fetcher)
    : PeerPrefetch(store, artifacts, fetcher, Options{}) {}

PeerPrefetch::PeerPrefetch(store::Store& store, const ArtifactStore& artifacts, MissingArtifacts& fetcher,
                           Options options)
    : store_(store), artifacts_(artifacts), fetcher_(fetcher), options_(options) {
  fetcher_.subscribe([this](const std::string& sha, const Status& st) {
    if (st.ok()) {
      failed_.erase(sha);
      if (!recorded_held_.count(sha)) record({sha}, {});  // now, not at the next pass: an upload waits for it
      return;
    }
    Backoff& b = failed_[sha];
    b.wait = b.wait == 0 ? options_.retry_ms : std::min(options_.max_retry_ms, b.wait * 2);
    b.next_try = last_now_ + b.wait;
  });
}

void PeerPrefetch::tick(Millis now) {
  if (now < next_pass_) return;
  prefetch_missing(now);
}

void PeerPrefetch::prefetch_missing(Millis now) {
  last_now_ = now;
  next_pass_ = now + options_.period_ms;
  auto rows = store_.releases();
  if (!rows) {
    LP()->warn("cannot list the releases to prefetch: {}", rows.error().message);
    return;
  }
  size_t asked = 0, missing = 0;
  std::vector<std::string> held, lacking;
  for (const auto& r : *rows) {
    const bool here = artifacts_.has(r.sha256);
    // A row may come from outside (etcd): one naming no valid digest is never recorded (the
    // fetcher refuses and logs it).
    if (copies_ && is_sha256_hex(r.sha256) && !(here ? recorded_held_ : recorded_lacking_).count(r.sha256))
      (here ? held : lacking).push_back(r.sha256);
    if (here) continue;
    ++missing;
    if (fetcher_.fetching(r.sha256) || asked >= options_.max_per_pass) continue;
    if (auto it = failed_.find(r.sha256); it != failed_.end() && now < it->second.next_try) continue;
    if (!fetcher_.want(r)) continue;  // a full queue (the next pass), or a row naming no artifact (logged)
    ++asked;
  }
  if (asked > 0) LP()->info("prefetching {} of {} missing artifact(s) from peer coordinators", asked, missing);
  missing_ = missing;
  if (!held.empty() || !lacking.empty()) record(held, lacking);
}

void PeerPrefetch::record(const std::vector<std::string>& held, const std::vector<std::string>& lacking) {
  if (!copies_) return;
  if (auto s = copies_->record(held, lacking); !s.ok()) {
    LP()->warn("cannot record which of {} artifact(s) this coordinator holds: {}", held.size() + lacking.size(),
               safe_text(s.error().message, 300));
    return;
  }
  for (const auto& sha : held) {
    recorded_held_.insert(sha);
    recorded_lacking_.erase(sha);
  }
  for (const auto& sha : lacking) {
    recorded_lacking_.insert(sha);
    recorded_held_.erase(sha);
  }
}

}  // namespace gantry::coordinator
