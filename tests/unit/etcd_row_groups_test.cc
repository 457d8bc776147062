// The rows one etcd write adds in bulk, as groups (coordinator/store/etcd_row_groups.h) and as
// the codec reads them back (etcd_codec.h): a rollout's events under their first id, timeline
// entries under numbers in write order, a plan under each run's first position; at most
// kMaxGroupRows rows per key; a stored group that is not one is an Error naming its key.
#include "coordinator/store/etcd_row_groups.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace gantry::store {
namespace {

const etcd_keys::Layout kKeys{"/g/"};

std::string value_at(const EtcdBatch& b, const std::string& key) {
  auto v = b.pending(key);
  if (!v || !*v) return "";
  return **v;
}

EventRow event(int64_t id, uint64_t rollout) { return EventRow{id, rollout, 100 + id, "line " + std::to_string(id)}; }

TEST(EtcdRowGroups, EventsAreOneKeyPerRolloutUnderTheirFirstId) {
  EtcdRowGroups g;
  g.add(event(5, 1));
  g.add(event(6, 2));
  g.add(event(7, 1));
  EtcdBatch b;
  etcd_codec::Counters c;
  g.put(b, kKeys, c);
  EXPECT_EQ(b.size(), 2u);
  const std::string k1 = kKeys.event(1, 5);
  auto one = etcd_codec::decode_event_group(k1, value_at(b, k1));
  ASSERT_TRUE(one.ok()) << one.error().message;
  ASSERT_EQ(one->size(), 2u);
  EXPECT_EQ((*one)[0].id, 5);
  EXPECT_EQ((*one)[1].id, 7);
  EXPECT_EQ((*one)[1].message, "line 7");
  auto two = etcd_codec::decode_event_group(kKeys.event(2, 6), value_at(b, kKeys.event(2, 6)));
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->size(), 1u);
  EXPECT_EQ((*two)[0].rollout_id, 2u);
  EXPECT_EQ(c.group, 0u);
}

TEST(EtcdRowGroups, AGroupHoldsAtMostTheLimitOfRows) {
  EtcdRowGroups g;
  const size_t n = etcd_codec::kMaxGroupRows * 2 + 1;
  for (size_t i = 1; i <= n; ++i) {
    g.add(event(static_cast<int64_t>(i), 3));
    g.add(TimelineRow{3, "h" + std::to_string(i), 0, "swap", 1, 2});
    g.add_plan_slot(3, static_cast<uint32_t>(i - 1), R"({"host_id":"h"})");
  }
  EtcdBatch b;
  etcd_codec::Counters c;
  c.group = 40;
  g.put(b, kKeys, c);
  EXPECT_EQ(b.size(), 9u);  // three groups of each kind
  EXPECT_EQ(etcd_codec::decode_event_group("k", value_at(b, kKeys.event(3, 1)))->size(), etcd_codec::kMaxGroupRows);
  EXPECT_EQ(etcd_codec::decode_event_group("k", value_at(b, kKeys.event(3, n)))->size(), 1u);
  EXPECT_EQ(c.group, 43u) << "timeline groups take the next numbers";
  EXPECT_EQ(etcd_codec::decode_timeline_group("k", value_at(b, kKeys.timeline(3, 41)))->size(),
            etcd_codec::kMaxGroupRows);
  EXPECT_EQ(etcd_codec::decode_timeline_group("k", value_at(b, kKeys.timeline(3, 43)))->size(), 1u);
  const auto last_first = static_cast<uint32_t>(2 * etcd_codec::kMaxGroupRows);
  EXPECT_EQ(etcd_codec::decode_slot_plan("k", value_at(b, kKeys.slot_plan(3, 0)))->size(), etcd_codec::kMaxGroupRows);
  EXPECT_EQ(etcd_codec::decode_slot_plan("k", value_at(b, kKeys.slot_plan(3, last_first)))->size(), 1u);
}

TEST(EtcdRowGroups, APlanIsGroupedByRunsOfConsecutivePositions) {
  EtcdRowGroups g;
  g.add_plan_slot(1, 4, R"({"p":4})");
  g.add_plan_slot(1, 0, R"({"p":0})");
  g.add_plan_slot(1, 1, R"({"p":1})");
  g.add_plan_slot(1, 5, R"({"p":5})");
  EtcdBatch b;
  etcd_codec::Counters c;
  g.put(b, kKeys, c);
  EXPECT_EQ(b.size(), 2u);
  auto first = etcd_codec::decode_slot_plan("k", value_at(b, kKeys.slot_plan(1, 0)));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[1]["p"], 1);
  auto second = etcd_codec::decode_slot_plan("k", value_at(b, kKeys.slot_plan(1, 4)));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->size(), 2u);
  EXPECT_EQ((*second)[0]["p"], 4);
}

TEST(EtcdRowGroups, ATimelineGroupReadsBackEveryField) {
  EtcdRowGroups g;
  g.add(TimelineRow{9, "web-1", 3, "verify", 1234, 1250});
  EtcdBatch b;
  etcd_codec::Counters c;
  g.put(b, kKeys, c);
  auto rows = etcd_codec::decode_timeline_group("k", value_at(b, kKeys.timeline(9, 1)));
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  const TimelineRow& t = (*rows)[0];
  EXPECT_EQ(t.rollout_id, 9u);
  EXPECT_EQ(t.host_id, "web-1");
  EXPECT_EQ(t.seq, 3u);
  EXPECT_EQ(t.phase, "verify");
  EXPECT_EQ(t.at_ms, 1234);
  EXPECT_EQ(t.received_ms, 1250);
}

TEST(EtcdRowGroups, AStoredGroupThatIsNotOneIsAnErrorNamingItsKey) {
  // One row (as written before groups) is a group of one.
  auto single = etcd_codec::decode_event_group("k", R"({"id":1,"rollout_id":1,"at":1,"message":"m"})");
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->size(), 1u);
  std::string too_many = "[";
  for (size_t i = 0; i <= etcd_codec::kMaxGroupRows; ++i)
    too_many += std::string(i ? "," : "") + R"({"id":1,"rollout_id":1,"at":1,"message":"m"})";
  too_many += "]";
  for (const std::string& bad :
       std::vector<std::string>{"", "[]", "3", "[3]", R"([{"id":"x","rollout_id":1,"at":1,"message":"m"}])",
                                R"([{"rollout_id":1,"at":1,"message":"m"}])", "[{\"id\":1", too_many}) {
    auto r = etcd_codec::decode_event_group("/g/event/x\x01", bad);
    ASSERT_FALSE(r.ok()) << bad.substr(0, 80);
    EXPECT_NE(r.error().message.find("/g/event/x"), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.find('\x01'), std::string::npos) << "the key is escaped";
  }
  EXPECT_FALSE(etcd_codec::decode_timeline_group("k", R"([{"host_id":"h"}])").ok());
  EXPECT_FALSE(etcd_codec::decode_slot_plan("k", "{}").ok());
  EXPECT_FALSE(etcd_codec::decode_slot_plan("k", "[]").ok());
  EXPECT_FALSE(etcd_codec::decode_slot_plan("k", "[{").ok());
}

}  // namespace
}  // namespace gantry::store
