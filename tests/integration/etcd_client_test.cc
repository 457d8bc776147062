// The etcd v3 client (coordinator/etcd/etcd_client.h) against real etcd members
// (tests/support/etcd_cluster.h): transactions, ranges, leases, compaction, failover between
// members and etcd's limits named in the error.
#include "coordinator/etcd/etcd_client.h"

#include <gtest/gtest.h>

#include "tests/support/etcd_cluster.h"

namespace gantry {
namespace {

using etcd::Compare;
using etcd::Op;
using testing::EtcdCluster;

std::unique_ptr<etcd::Client> connect(const EtcdCluster& c, int timeout_ms = 2000) {
  auto cfg = etcd::parse_store_uri(c.uri());
  EXPECT_TRUE(cfg.ok()) << cfg.error().message;
  cfg->call_timeout_ms = timeout_ms;
  auto client = etcd::Client::connect(*cfg);
  EXPECT_TRUE(client.ok()) << client.error().message;
  return std::move(*client);
}

TEST(EtcdClient, TransactionsRangesAndCompares) {
  EtcdCluster etcd(1);
  auto c = connect(etcd);
  auto put = c->txn({}, {Op::put("/t/a", "1"), Op::put("/t/b", "2"), Op::put("/t/c", "3")});
  ASSERT_TRUE(put.ok()) << put.error().message;
  EXPECT_TRUE(put->succeeded);
  EXPECT_GT(put->revision, 0);

  auto all = c->range("/t/", etcd::prefix_end("/t/"));
  ASSERT_TRUE(all.ok()) << all.error().message;
  ASSERT_EQ(all->kvs.size(), 3u);
  EXPECT_EQ(all->kvs[0].key, "/t/a");
  EXPECT_EQ(all->kvs[2].value, "3");
  EXPECT_EQ(all->kvs[0].create_revision, put->revision);

  auto desc = c->range("/t/", etcd::prefix_end("/t/"), 2, false, false, /*descending=*/true);
  ASSERT_TRUE(desc.ok());
  ASSERT_EQ(desc->kvs.size(), 2u);
  EXPECT_EQ(desc->kvs[0].key, "/t/c");
  EXPECT_EQ(desc->kvs[1].key, "/t/b");
  EXPECT_TRUE(desc->more);

  auto keys = c->range("/t/a", "", 0, /*keys_only=*/true, /*serializable=*/true);
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->kvs.size(), 1u);
  EXPECT_EQ(keys->kvs[0].value, "");

  // A failed compare runs the failure ops (a get here) and writes nothing.
  Compare absent{"/t/a", Compare::Target::kCreate, Compare::Result::kEqual, 0, ""};
  auto t = c->txn({absent}, {Op::put("/t/a", "x")}, {Op::get("/t/a")});
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_FALSE(t->succeeded);
  ASSERT_EQ(t->gets.size(), 1u);
  ASSERT_EQ(t->gets[0].size(), 1u);
  EXPECT_EQ(t->gets[0][0].value, "1");

  Compare same{"/t/a", Compare::Target::kCreate, Compare::Result::kEqual, put->revision, ""};
  auto d = c->txn({same}, {Op::del("/t/", etcd::prefix_end("/t/")), Op::get("/t/b")});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_TRUE(d->succeeded);
  ASSERT_EQ(d->gets.size(), 2u);
  EXPECT_TRUE(d->gets[1].empty());
  auto none = c->range("/t/", etcd::prefix_end("/t/"));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->kvs.empty());
}

TEST(EtcdClient, LeasesAreGrantedKeptAliveAndRevoked) {
  EtcdCluster etcd(1);
  auto c = connect(etcd);
  auto lease = c->lease_grant(5);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  auto put = c->txn({}, {Op::put("/l/k", "v", *lease)});
  ASSERT_TRUE(put.ok()) << put.error().message;
  for (int i = 0; i < 3; ++i) {  // the same stream, kept open
    auto ttl = c->lease_keepalive(*lease);
    ASSERT_TRUE(ttl.ok()) << ttl.error().message;
    EXPECT_GT(*ttl, 0);
    EXPECT_LE(*ttl, 5);
  }
  auto got = c->range("/l/k");
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_EQ(got->kvs[0].lease, *lease);
  ASSERT_TRUE(c->lease_revoke(*lease).ok());
  auto gone = c->range("/l/k");
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->kvs.empty());
  auto ttl = c->lease_keepalive(*lease);  // a revoked lease: TTL 0
  ASSERT_TRUE(ttl.ok()) << ttl.error().message;
  EXPECT_EQ(*ttl, 0);
}

TEST(EtcdClient, CompactionDropsHistory) {
  EtcdCluster etcd(1);
  auto c = connect(etcd);
  int64_t rev = 0;
  for (int i = 0; i < 5; ++i) {
    auto t = c->txn({}, {Op::put("/c/k", std::to_string(i))});
    ASSERT_TRUE(t.ok());
    rev = t->revision;
  }
  ASSERT_TRUE(c->compact(rev).ok());
  auto again = c->compact(rev - 1);  // at or below the compacted revision: etcd refuses
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "etcd");
  EXPECT_NE(again.error().message.find("compacted"), std::string::npos) << again.error().message;
}

TEST(EtcdClient, LimitsAreNamedInTheError) {
  testing::EtcdClusterOptions o;
  o.max_txn_ops = 16;
  o.max_request_bytes = 64 * 1024;
  EtcdCluster etcd(1, o);
  auto c = connect(etcd);
  std::vector<Op> ops;
  for (int i = 0; i < 17; ++i) ops.push_back(Op::put("/x/" + std::to_string(i), "v"));
  auto many = c->txn({}, ops);
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.error().message.find("--max-txn-ops"), std::string::npos) << many.error().message;
  auto big = c->txn({}, {Op::put("/x/big", std::string(100 * 1024, 'b'))});
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message.find("--max-request-bytes"), std::string::npos) << big.error().message;
}

TEST(EtcdClient, FailsOverWhenAMemberDies) {
  EtcdCluster etcd(3);
  auto c = connect(etcd);
  ASSERT_TRUE(c->txn({}, {Op::put("/f/k", "1")}).ok());
  auto lease = c->lease_grant(10);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ASSERT_TRUE(c->lease_keepalive(*lease).ok());
  etcd.kill(0);  // the member the client talks to first
  // Bounded: each call fails over within itself or leaves the dead member for the next call.
  bool wrote = false;
  for (int i = 0; i < 5 && !wrote; ++i) wrote = c->txn({}, {Op::put("/f/k", "2")}).ok();
  EXPECT_TRUE(wrote) << etcd.diagnostics();
  bool kept = false;
  for (int i = 0; i < 5 && !kept; ++i) {
    auto ttl = c->lease_keepalive(*lease);
    kept = ttl.ok() && *ttl > 0;
  }
  EXPECT_TRUE(kept);
  auto got = c->range("/f/k");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->kvs.at(0).value, "2");
}

TEST(EtcdClient, WithoutQuorumCallsFailWithinTheirDeadline) {
  EtcdCluster etcd(3);
  auto c = connect(etcd, 1000);
  ASSERT_TRUE(c->txn({}, {Op::put("/q/k", "1")}).ok());
  etcd.stop(1);
  etcd.stop(2);
  auto w = c->txn({}, {Op::put("/q/k", "2")});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code, "etcd");
  etcd.start(1);  // quorum again
  bool wrote = false;
  for (int i = 0; i < 20 && !wrote; ++i) wrote = c->txn({}, {Op::put("/q/k", "3")}).ok();
  EXPECT_TRUE(wrote) << etcd.diagnostics();
}

TEST(EtcdClient, TlsWithAClientCertificate) {
  gantry::testing::EtcdClusterOptions o;
  o.tls = true;
  o.client_cert_auth = true;
  EtcdCluster etcd(1, o);
  auto cfg = etcd::parse_store_uri(etcd.uri());
  ASSERT_TRUE(cfg.ok());
  cfg->ca_file = etcd.ca_file();
  cfg->cert_file = etcd.client_cert_file();
  cfg->key_file = etcd.client_key_file();
  auto c = etcd::Client::connect(*cfg);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto put = (*c)->txn({}, {Op::put("/tls/k", "v")});
  ASSERT_TRUE(put.ok()) << put.error().message << etcd.diagnostics();
  auto lease = (*c)->lease_grant(5);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ASSERT_TRUE((*c)->lease_keepalive(*lease).ok());

  // Without the client certificate the member refuses; without TLS it cannot be spoken to.
  cfg->cert_file.clear();
  cfg->key_file.clear();
  cfg->call_timeout_ms = 1000;
  auto anon = etcd::Client::connect(*cfg);
  ASSERT_TRUE(anon.ok());
  EXPECT_FALSE((*anon)->range("/tls/k").ok());
  cfg->ca_file.clear();
  auto plain = etcd::Client::connect(*cfg);
  ASSERT_TRUE(plain.ok());
  auto r = (*plain)->range("/tls/k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "etcd");

  // A missing CA file or half a client certificate is refused at connect.
  cfg->ca_file = "/nonexistent/ca.pem";
  EXPECT_FALSE(etcd::Client::connect(*cfg).ok());
  cfg->ca_file = etcd.ca_file();
  cfg->cert_file = etcd.client_cert_file();
  EXPECT_FALSE(etcd::Client::connect(*cfg).ok());
}

TEST(EtcdClient, UnreachableIsAnError) {
  etcd::ClientConfig cfg;
  cfg.endpoints = {"127.0.0.1:" + std::to_string(testing::free_tcp_port())};
  cfg.call_timeout_ms = 500;
  auto c = etcd::Client::connect(cfg);
  ASSERT_TRUE(c.ok());
  auto r = (*c)->range("/k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "etcd");
  auto k = (*c)->lease_keepalive(1);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.error().code, "etcd");
}

}  // namespace
}  // namespace gantry
