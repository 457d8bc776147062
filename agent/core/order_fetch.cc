// Handing the active order's release to the fetcher and on to staging: begin_fetch (already
// installed, already downloaded, or a Fetcher for the chunks), the chunks and errors the
// coordinator sends for it, the digest check and the extraction on the worker.
#include "agent/core/agent.h"

#include <memory>
#include <string>

#include "common/util/fs.h"
#include "common/util/log.h"

namespace gantry::agent {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.order"); }

}  // namespace

void Agent::on_chunk(const proto::ChunkView& c) {
  if (!fetcher_) return;
  fetcher_->on_chunk(c);
  if (fetcher_->state() == Fetcher::State::kComplete)
    after_fetch_checked();
  else if (fetcher_->state() == Fetcher::State::kFailed)
    fail_before_swap(fetcher_->error());
}

void Agent::on_error(const proto::ErrorMsg& e) {
  if (fetcher_) {
    fetcher_->on_error(e);
    if (fetcher_->state() == Fetcher::State::kFailed) {
      fail_before_swap(fetcher_->error());
      return;
    }
  }
  lg()->warn("coordinator error {}: {}", e.code, e.message);
}

void Agent::on_reconnect() {
  if (fetcher_) fetcher_->resend();
}

void Agent::begin_fetch() {
  auto& a = *state_.active;
  a.phase = phase::kFetching;
  // No journal write here: the order is already durable in the queue (written before its
  // OrderAck), and a restart finds it there and starts it exactly as this does — nothing has
  // touched the disk yet. The next write (staging, or swapping for an installed release)
  // records it as active.
  if (Status st = signatures_.check(a.order); !st.ok()) {
    // Checked at acceptance too; again here for an order resumed from the journal.
    fail_before_swap("refused release " + a.order.version + " of " + a.order.service + ": " + st.error().message);
    return;
  }
  ServiceRuntime& rt = svc();
  ReleaseId rid = release();
  const bool known_missing = not_installed_ == a.order.order_id;
  not_installed_.clear();
  if (!known_missing && rt.driver->has_release(rid)) {
    set_phase(phase::kFetching, "release already installed");
    progress(phase::kFetching, "release " + rid.version + " already installed; no download");
    a.timings_ms["fetch"] = 0;
    a.timings_ms["stage"] = 0;
    begin_swap();
    return;
  }
  if (Status st = rt.driver->check_installable(rid); !st.ok()) {
    fail_before_swap(st.error().message);
    return;
  }
  // downloads/ holds this release's files only: what other orders left (a fetch that stalled,
  // an artifact an interrupted order never staged) goes now.
  if (Status st = rt.driver->prune_downloads(rid.sha256, /*keep_complete=*/true); !st.ok())
    lg()->warn("cannot remove old downloads of {}: {}", rid.service, st.error().message);
  if (fs::exists(rt.driver->artifact_path(rid.sha256))) {
    // Downloaded and checked before an interruption: go straight to staging.
    mark_timing("fetch");
    begin_stage();
    return;
  }
  set_phase(phase::kFetching, std::to_string(rid.size) + " bytes");
  progress(phase::kFetching, "downloading " + std::to_string(rid.size) + " bytes");
  fetcher_ =
      std::make_unique<Fetcher>(rt.driver->partial_artifact_path(rid.sha256), rid.sha256, rid.size, clock_, send_);
  if (Status st = fetcher_->start(); !st.ok()) {
    fail_before_swap("fetch failed: " + st.error().message);
    return;
  }
  if (fetcher_->state() == Fetcher::State::kComplete) after_fetch_checked();
}

void Agent::after_fetch_checked() {
  // The fetcher hashed the bytes as it wrote them (empty if it found the file complete): the
  // driver checks that digest instead of reading the file back.
  std::string hashed = fetcher_ ? fetcher_->digest() : std::string();
  fetcher_.reset();
  auto driver = svc().driver;
  ReleaseId rid = release();
  worker_.run("digest",
              [driver, rid, hashed](const std::atomic<bool>&) { return driver->finish_download(rid, hashed); });
}

void Agent::begin_stage() {
  set_phase(phase::kStaging, "extracting");
  if (!persist_or_note()) {
    fail_before_swap("state write failed: " + state_error_);
    return;
  }
  progress(phase::kStaging, "extracting release " + state_.active->order.version);
  auto driver = svc().driver;
  ReleaseId rid = release();
  worker_.run("stage", [driver, rid](const std::atomic<bool>&) { return driver->stage(rid); });
}

}  // namespace gantry::agent
