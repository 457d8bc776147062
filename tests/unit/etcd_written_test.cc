// What the etcd store keeps of its own writes (coordinator/store/etcd_written.h): staged
// changes are seen by the write that makes them, kept only once it committed, dropped with
// the rollout that ends and by clear().
#include "coordinator/store/etcd_written.h"

#include <gtest/gtest.h>

namespace gantry::store {
namespace {

OrderMeta open_order(uint64_t rollout, const std::string& host) { return OrderMeta{rollout, host, 7, true, false}; }

TEST(EtcdWritten, AStagedChangeIsSeenByItsWriteAndKeptOnlyOnceCommitted) {
  EtcdWritten w;
  WrittenChanges staged;
  EXPECT_EQ(w.order("o1", staged), nullptr);
  staged.orders["o1"] = open_order(1, "h1");
  ASSERT_NE(w.order("o1", staged), nullptr);
  EXPECT_EQ(w.order("o1", staged)->host_id, "h1");
  EXPECT_EQ(w.order("o1", WrittenChanges{}), nullptr) << "not kept before the write committed";
  w.keep(staged);
  ASSERT_NE(w.order("o1", WrittenChanges{}), nullptr);
  EXPECT_EQ(w.orders(), 1u);

  // A later write's staged state wins over what is kept.
  WrittenChanges next;
  next.orders["o1"] = OrderMeta{1, "h1", 7, false, true};
  EXPECT_FALSE(w.order("o1", next)->open);
  EXPECT_TRUE(w.order("o1", WrittenChanges{})->open);
}

TEST(EtcdWritten, AnEndedRolloutTakesItsOrdersAndHeaderAlong) {
  EtcdWritten w;
  WrittenChanges first;
  first.orders["a"] = open_order(1, "h1");
  first.orders["b"] = open_order(2, "h2");
  RolloutRow h1;
  h1.id = 1;
  h1.service = "web";
  first.headers[1] = h1;
  w.keep(first);
  ASSERT_NE(w.header(1, WrittenChanges{}), nullptr);

  WrittenChanges end;
  end.ended.insert(1);
  EXPECT_EQ(w.order("a", end), nullptr) << "the write that ends rollout 1 no longer knows its orders";
  EXPECT_EQ(w.header(1, end), nullptr);
  w.keep(end);
  EXPECT_EQ(w.order("a", WrittenChanges{}), nullptr);
  EXPECT_EQ(w.header(1, WrittenChanges{}), nullptr);
  ASSERT_NE(w.order("b", WrittenChanges{}), nullptr) << "another rollout's order stays";
  EXPECT_EQ(w.orders(), 1u);
}

TEST(EtcdWritten, ClearForgetsEverythingLearnedOrWritten) {
  EtcdWritten w;
  w.learn("x", open_order(3, "h3"));
  RolloutRow h;
  h.id = 3;
  w.learn(h);
  ASSERT_NE(w.order("x", WrittenChanges{}), nullptr);
  w.clear();
  EXPECT_EQ(w.order("x", WrittenChanges{}), nullptr);
  EXPECT_EQ(w.header(3, WrittenChanges{}), nullptr);
  EXPECT_EQ(w.orders(), 0u);
}

TEST(EtcdWritten, PastItsBoundItKeepsNothingRatherThanGrow) {
  EtcdWritten w(100);
  WrittenChanges many;
  for (size_t i = 0; i <= 100; ++i) many.orders["o" + std::to_string(i)] = open_order(1, "h");
  w.keep(many);
  EXPECT_EQ(w.orders(), 0u);
  w.learn("y", open_order(1, "h"));
  EXPECT_EQ(w.orders(), 1u);
}

// Orders are stored in groups: a store knows every order of a rollout it created, or whose
// orders it read all at once, and then does not look for an unknown one in etcd again; the plan
// (first slots) is written only for a rollout it created and has not written slots of.
TEST(EtcdWritten, WhatItKnowsOfWholeRollouts) {
  EtcdWritten w(100);
  WrittenChanges create;
  create.created.insert(1);
  EXPECT_TRUE(w.knows_all(1, create));
  EXPECT_TRUE(w.unplanned(1, create));
  EXPECT_FALSE(w.knows_all(1, WrittenChanges{})) << "not before the write committed";
  w.keep(create);
  EXPECT_TRUE(w.knows_all(1, WrittenChanges{}));
  WrittenChanges plan;
  plan.planned.insert(1);
  EXPECT_FALSE(w.unplanned(1, plan));
  w.keep(plan);
  EXPECT_FALSE(w.unplanned(1, WrittenChanges{}));

  EXPECT_FALSE(w.knows_all(2, WrittenChanges{}));
  w.learned_all(2);
  EXPECT_TRUE(w.knows_all(2, WrittenChanges{}));
  EXPECT_FALSE(w.unplanned(2, WrittenChanges{})) << "a rollout it did not create gets no plan";

  WrittenChanges end;
  end.ended.insert(2);
  EXPECT_FALSE(w.knows_all(2, end));
  w.keep(end);
  EXPECT_FALSE(w.knows_all(2, WrittenChanges{}));

  // Past its bound, or cleared, it knows no rollout whole any more.
  WrittenChanges many;
  for (size_t i = 0; i <= 100; ++i) many.orders["o" + std::to_string(i)] = open_order(1, "h");
  w.keep(many);
  EXPECT_FALSE(w.knows_all(1, WrittenChanges{}));
  w.learned_all(3);
  w.clear();
  EXPECT_FALSE(w.knows_all(3, WrittenChanges{}));
}

}  // namespace
}  // namespace gantry::store
