#include "coordinator/server/peer_prefetch.h"

#include <algorithm>

#include "common/util/log.h"

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
  for (const auto& r : *rows) {
    if (artifacts_.has(r.sha256)) continue;
    ++missing;
    if (fetcher_.fetching(r.sha256) || asked >= options_.max_per_pass) continue;
    if (auto it = failed_.find(r.sha256); it != failed_.end() && now < it->second.next_try) continue;
    if (!fetcher_.want(r)) continue;  // a full queue (the next pass), or a row naming no artifact (logged)
    ++asked;
  }
  if (asked > 0) LP()->info("prefetching {} of {} missing artifact(s) from peer coordinators", asked, missing);
  missing_ = missing;
}

}  // namespace gantry::coordinator
