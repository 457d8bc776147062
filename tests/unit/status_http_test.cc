// The pieces that keep the status page's cost flat: BodyCache (one gzip and ETag per body),
// RequestedViews (one build per view and age, whoever asks) and the /rollouts paths HttpRoutes
// accepts.
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <thread>

#include "common/util/clock.h"
#include "coordinator/http/body_cache.h"
#include "coordinator/server/http_routes.h"
#include "coordinator/server/requested_views.h"

using gantry::FakeClock;
using gantry::coordinator::BodyCache;
using gantry::coordinator::BuiltView;
using gantry::coordinator::HttpRoutes;
using gantry::coordinator::RequestedViews;

namespace {

std::string gunzip(const std::string& in) {
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string out(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  inflateEnd(&z);
  return out;
}

}  // namespace

TEST(BodyCache, CompressesEachBodyOnceAndNamesItByAnEtag) {
  BodyCache cache;
  std::string json = "{\"hosts\":[";
  for (int i = 0; i < 2000; ++i) json += std::string(i ? "," : "") + "{\"host_id\":\"h" + std::to_string(i) + "\"}";
  json += "]}";
  auto body = std::make_shared<const std::string>(json);
  const auto a = cache.get(body);
  const auto b = cache.get(body);  // the same snapshot: nothing done again
  EXPECT_EQ(cache.compressions(), 1u);
  EXPECT_EQ(a.etag, b.etag);
  EXPECT_EQ(a.gzip.get(), b.gzip.get());
  EXPECT_EQ(gunzip(*a.gzip), json);
  EXPECT_LT(a.gzip->size(), json.size() / 4);
  EXPECT_EQ(a.etag.front(), '"');
  EXPECT_EQ(a.etag.back(), '"');
  // Another snapshot with the same bytes is another body: a new ETag.
  const auto c = cache.get(std::make_shared<const std::string>(json));
  EXPECT_EQ(cache.compressions(), 2u);
  EXPECT_NE(c.etag, a.etag);
  EXPECT_EQ(gunzip(*c.gzip), json);
  EXPECT_EQ(gunzip(*cache.get(std::make_shared<const std::string>()).gzip), "");
}

TEST(HttpRoutes, RolloutPathsNameOneViewEach) {
  EXPECT_EQ(HttpRoutes::view_key("/rollouts"), "history");
  EXPECT_EQ(HttpRoutes::view_key("/rollouts/"), "history");
  EXPECT_EQ(HttpRoutes::view_key("/rollouts/7"), "rollout/7");
  EXPECT_EQ(HttpRoutes::view_key("/rollouts/123456789012345678"), "rollout/123456789012345678");
  for (const char* bad : {"/rollouts/07", "/rollouts/0", "/rollouts/-1", "/rollouts/1x", "/rollouts/1/", "/rollouts/ 1",
                          "/rollouts/1234567890123456789", "/rollout/1", "/rolloutsx", "/status/1", ""}) {
    EXPECT_EQ(HttpRoutes::view_key(bad), "") << bad;
  }
}

TEST(RequestedViews, EachViewIsBuiltOnceForEveryoneAskingWithinItsAge) {
  FakeClock clock;
  std::atomic<int> built{0};
  RequestedViews views(clock, [&](const std::string& key) {
    ++built;
    BuiltView v;
    v.status = key == "rollout/404" ? 404 : 200;
    v.body = std::make_shared<const std::string>("{\"key\":\"" + key + "\"}");
    return v;
  });
  // Three readers ask for the same view while the loop has not turned yet: one build.
  std::vector<std::shared_ptr<const BuiltView>> got(3);
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) readers.emplace_back([&, i] { got[i] = views.get("rollout/7"); });
  for (int turns = 0; turns < 2000000 && views.builds() == 0; ++turns) {
    views.on_loop_turn();
    std::this_thread::yield();
  }
  for (auto& t : readers) t.join();
  // A reader that asked after the build took the kept answer; one that asked before waited for it.
  EXPECT_EQ(built.load(), 1);
  for (const auto& v : got) {
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(*v->body, "{\"key\":\"rollout/7\"}");
  }
  // Kept: asked again within kMaxAgeMs, nothing is built.
  EXPECT_EQ(*views.get("rollout/7")->body, "{\"key\":\"rollout/7\"}");
  EXPECT_EQ(built.load(), 1);
  views.on_loop_turn();  // nothing wanted: nothing built
  EXPECT_EQ(built.load(), 1);

  // Older than kMaxAgeMs: built again at the next turn; another key is its own view.
  clock.advance(RequestedViews::kMaxAgeMs);
  std::shared_ptr<const BuiltView> again, other;
  std::thread r1([&] { again = views.get("rollout/7"); });
  std::thread r2([&] { other = views.get("rollout/404"); });
  for (int turns = 0; turns < 2000000 && views.builds() < 3; ++turns) {
    views.on_loop_turn();
    std::this_thread::yield();
  }
  r1.join();
  r2.join();
  EXPECT_EQ(built.load(), 3);
  ASSERT_NE(again, nullptr);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->status, 404);
}
