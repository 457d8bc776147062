#include "coordinator/server/peer_prefetch.h"

#include <algorithm>

#include "common/util/log.h"
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
      record(sha, true);  // now, not at the next pass: an upload waits for it
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
    const bool here = artifacts_.has(r.sha256);
    record(r.sha256, here);
    if (here) continue;
    ++missing;
    if (fetcher_.fetching(r.sha256) || asked >= options_.max_per_pass) continue;
    if (auto it = failed_.find(r.sha256); it != failed_.end() && now < it->second.next_try) continue;
    if (!fetcher_.want(r)) continue;  // a full queue (the next pass), or a row naming no artifact (logged)
    ++asked;
  }
  if (asked > 0) LP()->info("prefetching {} of {} missing artifact(s) from peer coordinators", asked, missing);
  missing_ = missing;
}

void PeerPrefetch::record(const std::string& sha256, bool held) {
  if (!copies_) return;
  auto& done = held ? recorded_held_ : recorded_lacking_;
  if (done.count(sha256)) return;
  const Status s = held ? copies_->record_held(sha256) : copies_->record_lacking(sha256);
  if (!s.ok()) {
    LP()->warn("cannot record that this coordinator {} artifact {}: {}", held ? "holds" : "lacks",
               safe_text(sha256, 80), safe_text(s.error().message, 300));
    return;
  }
  done.insert(sha256);
  (held ? recorded_lacking_ : recorded_held_).erase(sha256);
}

}  // namespace gantry::coordinator
