#include "coordinator/server/http_routes.h"

#include "coordinator/http/status_page.h"
#include "coordinator/server/requested_views.h"
#include "coordinator/server/status_snapshot.h"

namespace gantry::coordinator {

namespace {

HttpResponse shared(BodyCache& cache, std::shared_ptr<const std::string> body, std::string content_type) {
  EncodedBody e = cache.get(std::move(body));
  HttpResponse r;
  r.content_type = std::move(content_type);
  r.shared = std::move(e.body);
  r.gzip = std::move(e.gzip);
  r.etag = std::move(e.etag);
  return r;
}

}  // namespace

std::string HttpRoutes::view_key(const std::string& path) {
  if (path == "/rollouts" || path == "/rollouts/") return "history";
  static const std::string kPrefix = "/rollouts/";
  if (path.compare(0, kPrefix.size(), kPrefix) != 0) return "";
  const std::string id = path.substr(kPrefix.size());
  // A rollout id: 1 to 18 digits, no leading zero (one key per rollout).
  if (id.empty() || id.size() > 18 || id[0] == '0') return "";
  for (char c : id)
    if (c < '0' || c > '9') return "";
  return "rollout/" + id;
}

HttpResponse HttpRoutes::handle(const HttpRequest& request) {
  const std::string& path = request.path;
  if (path == "/" || path == "/index.html") {
    // The page never changes: one body for the process, compressed at the first request.
    static const std::shared_ptr<const std::string> kPage(std::shared_ptr<const std::string>(), &status_page_html());
    return shared(page_, kPage, "text/html; charset=utf-8");
  }
  if (path == "/status" || path == "/metrics") {
    std::shared_ptr<const Published> p = snapshot_.fresh();
    if (path == "/metrics")
      return shared(metrics_, std::shared_ptr<const std::string>(p, &p->metrics_text),
                    "text/plain; version=0.0.4; charset=utf-8");
    return shared(status_, std::shared_ptr<const std::string>(p, &p->status_json), "application/json");
  }
  const std::string key = view_key(path);
  if (key.empty()) return HttpResponse{404, "text/plain", "not found\n"};
  std::shared_ptr<const BuiltView> v = views_.get(key);
  if (!v) return HttpResponse{503, "text/plain", "busy: the coordinator did not build this view in time; retry\n"};
  HttpResponse r;
  r.status = v->status;
  r.content_type = "application/json";
  r.shared = std::shared_ptr<const std::string>(v, v->body.get());
  return r;
}

}  // namespace gantry::coordinator
