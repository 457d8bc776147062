// What each path of the coordinator's HTTP endpoint answers (read-only; http_server.h serves
// them with its access rules):
//   /, /index.html   the status page (status_page.h)
//   /status          the status snapshot (status_snapshot.h), JSON
//   /metrics         the same snapshot's Prometheus text
//   /rollouts        the history: every rollout, newest first, without hosts (requested_views.h)
//   /rollouts/ID     one rollout with its hosts, their timelines and its event log
// The page, /status and /metrics are shared bodies: compressed once per snapshot and named by an
// ETag (body_cache.h), so a page polling /status costs the coordinator a send, not a rebuild.
#pragma once

#include <string>

#include "coordinator/http/body_cache.h"
#include "coordinator/http/http_server.h"

namespace gantry::coordinator {

class StatusSnapshot;
class RequestedViews;

class HttpRoutes {
 public:
  HttpRoutes(StatusSnapshot& snapshot, RequestedViews& views) : snapshot_(snapshot), views_(views) {}
  HttpResponse handle(const HttpRequest& request);

  // The key RequestedViews builds for a /rollouts path: "history", "rollout/ID"; "" for a path
  // that names no view (404).
  static std::string view_key(const std::string& path);

  static constexpr int kHistoryLimit = 500;  // rollouts /rollouts lists
  static constexpr int kEventsKept = 2000;   // the newest events of a rollout /rollouts/ID carries

 private:
  StatusSnapshot& snapshot_;
  RequestedViews& views_;
  BodyCache page_, status_, metrics_;
};

}  // namespace gantry::coordinator
