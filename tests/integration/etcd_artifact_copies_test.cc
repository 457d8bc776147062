// Which coordinators hold an artifact, as the leader reads it before it acknowledges an upload
// (coordinator/ha/etcd_artifact_copies.h), against a real etcd: only registered members count,
// a record can be taken back, and the records are not rows (an installation with them is still
// empty to `migrate`).
#include "coordinator/ha/etcd_artifact_copies.h"

#include <gtest/gtest.h>

#include "common/util/sha256.h"
#include "coordinator/ha/member_info.h"
#include "coordinator/store/etcd_store.h"
#include "tests/support/etcd_cluster.h"

namespace gantry {
namespace {

using coordinator::ArtifactCopies;
using coordinator::ha::EtcdArtifactCopies;
using coordinator::ha::MemberInfo;
using etcd::Op;
using testing::EtcdCluster;

std::shared_ptr<etcd::Client> connect(const EtcdCluster& c) {
  auto cfg = etcd::parse_store_uri(c.uri());
  EXPECT_TRUE(cfg.ok()) << cfg.error().message;
  auto client = etcd::Client::connect(*cfg);
  EXPECT_TRUE(client.ok()) << client.error().message;
  return std::shared_ptr<etcd::Client>(std::move(*client));
}

void register_member(etcd::Client& c, const std::string& prefix, const std::string& name, int port) {
  MemberInfo m;
  m.name = name;
  m.agent = "tcp://127.0.0.1:" + std::to_string(port);
  m.pub = "tcp://127.0.0.1:" + std::to_string(port + 1);
  m.operator_ep = "tcp://127.0.0.1:" + std::to_string(port + 2);
  auto t = c.txn({}, {Op::put(prefix + "members/" + name, m.to_json())});
  ASSERT_TRUE(t.ok()) << t.error().message;
}

TEST(EtcdArtifactCopies, OnlyRegisteredCoordinatorsCountAndARecordCanBeTakenBack) {
  EtcdCluster etcd(1);
  auto client = connect(etcd);
  const std::string p = "/gantry/";
  for (int i = 1; i <= 3; ++i) register_member(*client, p, "c" + std::to_string(i), 7000 + 10 * i);
  // A member record that is not valid is not a coordinator: neither holder nor awaited.
  ASSERT_TRUE(client->txn({}, {Op::put(p + "members/bogus", "{\"name\": \"x\\u0007\"}")}).ok());
  const std::string sha = sha256_hex("a release");
  EtcdArtifactCopies c1(*client, p, "c1"), c2(*client, p, "c2"), gone(*client, p, "c9");

  auto h = c1.holders(sha);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_TRUE(h->on.empty());
  EXPECT_EQ(h->waiting_for, (std::vector<std::string>{"c1", "c2", "c3"}));

  ASSERT_TRUE(c1.record({sha}, {}).ok());
  ASSERT_TRUE(gone.record({sha}, {}).ok());  // a coordinator not registered now: not counted
  h = c2.holders(sha);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->on, std::vector<std::string>{"c1"});
  EXPECT_EQ(h->waiting_for, (std::vector<std::string>{"c2", "c3"}));

  ASSERT_TRUE(c2.record({sha}, {}).ok());
  ASSERT_TRUE(c2.record({sha}, {}).ok());  // again: the same record
  ASSERT_TRUE(c1.record({}, {sha}).ok());
  h = c1.holders(sha);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->on, std::vector<std::string>{"c2"});
  EXPECT_EQ(h->waiting_for, (std::vector<std::string>{"c1", "c3"}));
  // Another artifact's records are its own.
  h = c1.holders(sha256_hex("another"));
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->on.empty());

  // Records written by someone else, hostile: a control character, bytes that are not UTF-8, an
  // empty name, a 100 KB name. None names a registered coordinator: none is shown or counted.
  const std::string cp = p + "copies/" + sha + "/";
  for (const std::string& bad :
       {std::string("c3\x1b[2J"), std::string("c3\xff\xfe"), std::string(), std::string(100000, 'c')})
    ASSERT_TRUE(client->txn({}, {Op::put(cp + bad, "x")}).ok());
  h = c1.holders(sha);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->on, std::vector<std::string>{"c2"});
  EXPECT_EQ(h->waiting_for, (std::vector<std::string>{"c1", "c3"}));

  // Not a digest: refused before etcd is asked.
  EXPECT_EQ(c1.record({"../../leader"}, {}).error().code, "invalid");
  EXPECT_EQ(c1.holders("").error().code, "invalid");

  // Many at once: in several transactions (etcd refuses more than 128 operations in one).
  std::vector<std::string> many;
  for (int i = 0; i < 250; ++i) many.push_back(sha256_hex("release " + std::to_string(i)));
  ASSERT_TRUE(c2.record(many, {sha}).ok());
  for (const auto& m : {many.front(), many[150], many.back()}) {
    h = c1.holders(m);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->on, std::vector<std::string>{"c2"});
  }
  h = c1.holders(sha);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->on.empty());

  // The records and the members are not rows: the store of this prefix is still empty.
  auto store = store::EtcdStore::open(client, p, store::Fence{p + "leader", -1});
  ASSERT_TRUE(store.ok()) << store.error().message;
  auto empty = (*store)->empty();
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_TRUE(*empty);
}

}  // namespace
}  // namespace gantry
