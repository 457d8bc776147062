// etcd://... parsing (coordinator/etcd/store_uri.cc) and etcd's prefix range end.
#include <gtest/gtest.h>

#include "coordinator/etcd/etcd_client.h"

namespace gantry {
namespace {

TEST(EtcdStoreUri, ParsesEndpointLists) {
  auto c = etcd::parse_store_uri("etcd://h1:2379,10.0.0.2:22379,[::1]:2380,h4,[fe80::1]");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->endpoints,
            (std::vector<std::string>{"h1:2379", "10.0.0.2:22379", "[::1]:2380", "h4:2379", "[fe80::1]:2379"}));
}

TEST(EtcdStoreUri, RefusesWhatIsNotAnEndpointList) {
  for (const char* bad : {"", "etcd://", "http://h:2379", "etcd://h:", "etcd://:2379", "etcd://h:0", "etcd://h:65536",
                          "etcd://h:12x", "etcd://h1:2379,", "etcd://,h1", "etcd://::1:2379", "etcd://h/x:2379",
                          "etcd://h 1:2379", "etcd://[::1", "etcd://[]:2379", "etcd://[::1]x", "etcd://h]:1"}) {
    auto c = etcd::parse_store_uri(bad);
    EXPECT_FALSE(c.ok()) << bad;
    if (!c.ok()) {
      EXPECT_EQ(c.error().code, "config") << bad;
    }
  }
  auto ctl = etcd::parse_store_uri(std::string("etcd://h\x01:1"));
  ASSERT_FALSE(ctl.ok());
  EXPECT_NE(ctl.error().message.find("[A-Za-z0-9"), std::string::npos);
}

TEST(EtcdStoreUri, PrefixEnd) {
  EXPECT_EQ(etcd::prefix_end("/gantry/"), "/gantry0");
  EXPECT_EQ(etcd::prefix_end("a\xff"), "b");
  EXPECT_EQ(etcd::prefix_end(std::string("\xff\xff")), std::string(1, '\0'));
}

}  // namespace
}  // namespace gantry
