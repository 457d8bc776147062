#include <gtest/gtest.h>

#include "common/protocol/codec.h"

using namespace gantry::proto;

TEST(Codec, HelloRoundTrip) {
  Hello h;
  h.host_id = "web-1";
  h.agent_version = "0.1.0";
  h.labels = {{"zone", "eu-1"}, {"role", "web"}};
  h.services.push_back({"web", "v1", "v0", "idle", ""});
  auto r = decode(encode(h));
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto& d = std::get<Hello>(*r);
  EXPECT_EQ(d.host_id, "web-1");
  EXPECT_EQ(d.labels.at("zone"), "eu-1");
  ASSERT_EQ(d.services.size(), 1u);
  EXPECT_EQ(d.services[0].current_version, "v1");
}
