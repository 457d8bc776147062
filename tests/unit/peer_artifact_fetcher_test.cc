// Fetching an artifact this coordinator lacks from peer coordinators: the fetch logic against
// peers that have it, lack it, lie about it or fail, with a real artifact dir and the worker
// thread; and the prefetch pass over a real store with a fake clock. The network is replaced
// by in-memory peers (ChunkSource); tests/integration/peer_artifacts_test.cc runs real ones.
#include "coordinator/server/peer_artifact_fetcher.h"

#include <filesystem>
#include <map>

#include <gtest/gtest.h>

#include "common/util/fs.h"
#include "common/util/sha256.h"
#include "coordinator/server/artifact_server.h"
#include "coordinator/server/peer_prefetch.h"
#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::TempDir;

// Peers by endpoint: what each holds and how it behaves.
struct FakePeers : ChunkSource {
  struct Peer {
    std::map<std::string, std::string> artifacts;  // sha256 -> bytes
    int fail_first = 0;                            // answer this many requests with a timeout
    bool wrong_size = false;                       // claim one byte more
    bool oversend = false;                         // send more than asked
    bool flip = false;                             // flip a byte of every chunk
  };
  std::map<std::string, Peer> peers;
  std::vector<std::string> asked;  // endpoint of every request, in order
  Expected<Piece> read(const std::string& endpoint, const std::string& sha256, uint64_t offset, uint32_t length,
                       const std::atomic<bool>&) override {
    asked.push_back(endpoint);
    auto p = peers.find(endpoint);
    if (p == peers.end()) return make_error("timeout", "no answer from " + endpoint);
    if (p->second.fail_first > 0) {
      --p->second.fail_first;
      return make_error("timeout", "no answer from " + endpoint);
    }
    auto a = p->second.artifacts.find(sha256);
    if (a == p->second.artifacts.end()) return make_error("not_found", endpoint + ": not_found");
    Piece piece;
    piece.size = a->second.size() + (p->second.wrong_size ? 1 : 0);
    if (offset > a->second.size()) return make_error("refused", "range");
    piece.data = a->second.substr(offset, p->second.oversend ? length + 1 : length);
    if (p->second.flip && !piece.data.empty()) piece.data[0] ^= 1;
    return piece;
  }
};

std::string bytes_of(size_t n, int seed) {
  std::string s(n, '\0');
  uint32_t x = 2463534242u + static_cast<uint32_t>(seed);
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

class PeerFetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    artifact_dir = dir.path + "/artifacts";
    ASSERT_TRUE(fs::make_dirs(artifact_dir).ok());
    data = bytes_of(3 * 1024 * 1024 + 17, 1);  // four chunks, the last short
    sha = sha256_hex(data);
    job = {sha, data.size(), "web v2", {"tcp://a:1", "tcp://b:1"}};
  }
  Status fetch() { return PeerArtifactFetcher::fetch(artifact_dir, job, peers, options, cancel); }
  // Everything in the artifact dir.
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(artifact_dir)) out.push_back(e.path().filename());
    return out;
  }

  TempDir dir;
  std::string artifact_dir, data, sha;
  PeerArtifactFetcher::Job job;
  FakePeers peers;
  PeerArtifactFetcher::Options options;
  std::atomic<bool> cancel{false};
};

TEST_F(PeerFetchTest, AnArtifactIsFetchedChunkByChunkCheckedAndRenamedIntoPlace) {
  peers.peers["tcp://a:1"].artifacts[sha] = data;
  ASSERT_TRUE(fetch().ok());
  EXPECT_EQ(files(), std::vector<std::string>{sha});  // no temp file left
  auto got = fs::read_file(artifact_dir + "/" + sha);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, data);
  EXPECT_EQ(peers.asked.size(), 4u);
  // Already here: nothing asked.
  peers.asked.clear();
  ASSERT_TRUE(fetch().ok());
  EXPECT_TRUE(peers.asked.empty());
}

TEST_F(PeerFetchTest, APeerWithoutTheArtifactIsSkippedForTheNext) {
  peers.peers["tcp://a:1"];  // up, but lacks it
  peers.peers["tcp://b:1"].artifacts[sha] = data;
  ASSERT_TRUE(fetch().ok());
  EXPECT_EQ(peers.asked.front(), "tcp://a:1");
  EXPECT_EQ(std::count(peers.asked.begin(), peers.asked.end(), "tcp://a:1"), 1);  // not_found: no retries
  EXPECT_EQ(files(), std::vector<std::string>{sha});
}

TEST_F(PeerFetchTest, ATransientFailureIsRetriedAtTheSamePeerWithinItsAttempts) {
  peers.peers["tcp://a:1"].artifacts[sha] = data;
  peers.peers["tcp://a:1"].fail_first = options.attempts_per_chunk - 1;
  ASSERT_TRUE(fetch().ok());
  for (const auto& ep : peers.asked) EXPECT_EQ(ep, "tcp://a:1");
  // A peer silent past its attempts: the next one.
  std::filesystem::remove(artifact_dir + "/" + sha);
  peers.asked.clear();
  peers.peers["tcp://a:1"].fail_first = options.attempts_per_chunk;
  peers.peers["tcp://b:1"].artifacts[sha] = data;
  ASSERT_TRUE(fetch().ok());
  EXPECT_EQ(std::count(peers.asked.begin(), peers.asked.end(), "tcp://a:1"), options.attempts_per_chunk);
}

TEST_F(PeerFetchTest, ALyingPeerIsRefusedAndNothingItSentIsKept) {
  for (int lie = 0; lie < 3; ++lie) {
    SCOPED_TRACE(lie);
    peers.peers.clear();
    auto& liar = peers.peers["tcp://a:1"];
    liar.artifacts[sha] = data;
    liar.flip = lie == 0;
    liar.wrong_size = lie == 1;
    liar.oversend = lie == 2;
    Status st = fetch();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, "unavailable");
    EXPECT_NE(st.error().message.find("tcp://a:1"), std::string::npos) << st.error().message;
    EXPECT_TRUE(files().empty());  // neither the artifact nor a temp file
    // With an honest peer after it, the honest bytes are kept.
    peers.peers["tcp://b:1"].artifacts[sha] = data;
    ASSERT_TRUE(fetch().ok());
    EXPECT_EQ(*fs::read_file(artifact_dir + "/" + sha), data);
    std::filesystem::remove(artifact_dir + "/" + sha);
  }
}

TEST_F(PeerFetchTest, AnArtifactNoPeerHasIsAnErrorNamingEveryPeer) {
  peers.peers["tcp://a:1"];
  Status st = fetch();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("tcp://a:1: not_found"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("no answer from tcp://b:1"), std::string::npos) << st.error().message;
  EXPECT_TRUE(files().empty());
  job.endpoints.clear();
  st = fetch();
  EXPECT_NE(st.error().message.find("no peer coordinator is known"), std::string::npos) << st.error().message;
}

TEST_F(PeerFetchTest, ARowThatNamesNoValidArtifactIsNeverFetched) {
  // Rows may come from outside (etcd): a digest that is a path, or a size out of bounds.
  peers.peers["tcp://a:1"].artifacts[sha] = data;
  for (const auto& [bad_sha, size] : std::vector<std::pair<std::string, uint64_t>>{
           {"../../../../tmp/x", 10}, {std::string(64, 'A'), 10}, {sha, 0}, {sha, (uint64_t{1} << 34) + 1}}) {
    job.sha256 = bad_sha;
    job.size = size;
    Status st = fetch();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, "invalid");
  }
  EXPECT_TRUE(peers.asked.empty());
  EXPECT_TRUE(files().empty());
  FixedPeerEndpoints endpoints({"tcp://a:1"});
  PeerArtifactFetcher fetcher(artifact_dir, endpoints, std::make_unique<FakePeers>());
  EXPECT_FALSE(fetcher.want({"web", "v9", "../x", 10, "", 1, "", ""}));
  EXPECT_FALSE(fetcher.fetching("../x"));
}

TEST_F(PeerFetchTest, ACancelledFetchLeavesNothing) {
  peers.peers["tcp://a:1"].artifacts[sha] = data;
  cancel = true;
  Status st = fetch();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "cancelled");
  EXPECT_TRUE(files().empty());
}

// The worker: fetches queued by the loop, results handed back on the loop's thread by deliver().
TEST_F(PeerFetchTest, TheWorkerFetchesOffTheCallersThreadAndDeliverTellsTheListeners) {
  auto source = std::make_unique<FakePeers>();
  source->peers["tcp://b:1"].artifacts[sha] = data;
  FixedPeerEndpoints endpoints({"tcp://a:1", "tcp://b:1"});
  ASSERT_TRUE(fs::write_file_atomic(artifact_dir + "/" + std::string(64, 'f') + ".peer", "cut short").ok());
  PeerArtifactFetcher fetcher(artifact_dir, endpoints, std::move(source));
  EXPECT_TRUE(files().empty());  // what a crash left is gone
  Metrics metrics;
  fetcher.set_metrics(&metrics);
  std::vector<std::pair<std::string, bool>> told;
  fetcher.subscribe([&](const std::string& s, const Status& st) { told.emplace_back(s, st.ok()); });
  store::ReleaseRow row{"web", "v2", sha, data.size(), "/elsewhere/" + sha, 1, "", ""};
  store::ReleaseRow missing{"web", "v3", std::string(64, 'e'), 10, "", 1, "", ""};
  ASSERT_TRUE(fetcher.want(row));
  ASSERT_TRUE(fetcher.want(row));  // once
  ASSERT_TRUE(fetcher.want(missing));
  EXPECT_TRUE(fetcher.fetching(sha));
  ASSERT_TRUE(fetcher.wait_idle(60000));
  EXPECT_TRUE(told.empty());  // only deliver() tells
  fetcher.deliver();
  ASSERT_EQ(told.size(), 2u);
  EXPECT_EQ(told[0], std::make_pair(sha, true));
  EXPECT_EQ(told[1], std::make_pair(std::string(64, 'e'), false));
  EXPECT_FALSE(fetcher.fetching(sha));
  EXPECT_EQ(*fs::read_file(artifact_dir + "/" + sha), data);
  EXPECT_EQ(metrics.peer_fetches_ok, 1u);
  EXPECT_EQ(metrics.peer_fetches_failed, 1u);
  EXPECT_EQ(metrics.peer_fetch_bytes, data.size());
  const std::string text = render_metrics(metrics, fleet::Registry{}, {});
  EXPECT_NE(text.find("gantry_peer_artifact_fetches_total{outcome=\"ok\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("gantry_peer_artifact_bytes_total " + std::to_string(data.size()) + "\n"), std::string::npos);
}

// An agent asks for a chunk of a release whose file is not here: its request waits for the
// fetch from a peer and is answered once the file is in place; when no peer has it, the agent
// gets not_found.
TEST_F(PeerFetchTest, AnAgentsRequestWaitsForTheFetchFromAPeerAndIsThenServed) {
  struct Link : AgentLink {
    std::vector<std::pair<std::string, proto::Message>> messages;
    std::vector<std::pair<std::string, size_t>> frames;
    void send(const std::string& identity, const proto::Message& m) override { messages.emplace_back(identity, m); }
    Status send_frame(const std::string& identity, zmq::message_t&& frame) override {
      frames.emplace_back(identity, frame.size());
      return Status::Ok();
    }
  } link;
  auto store = testing::open_store(dir.path + "/coordinator.db");
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->put_release({"web", "v2", sha, data.size(), "/other/coordinator/" + sha, 1, "", ""}).ok());
  const std::string gone = std::string(64, 'd');
  ASSERT_TRUE(store->put_release({"web", "v3", gone, 100, "", 2, "", ""}).ok());
  ArtifactStore artifacts(artifact_dir);
  Metrics metrics;
  FakeClock clock;
  ArtifactServer server(*store, artifacts, link, metrics, clock);
  auto source = std::make_unique<FakePeers>();
  source->peers["tcp://a:1"].artifacts[sha] = data;
  FixedPeerEndpoints endpoints({"tcp://a:1"});
  PeerArtifactFetcher fetcher(artifact_dir, endpoints, std::move(source));
  server.set_missing(&fetcher);

  server.on_fetch("agent-1", {sha, 0, 256 * 1024});
  server.on_fetch("agent-1", {sha, 256 * 1024, 256 * 1024});
  server.on_fetch("agent-2", {gone, 0, 100});
  EXPECT_EQ(server.awaiting_peer(), 3u);
  EXPECT_TRUE(link.messages.empty());  // silence, as under the chunk budget: nothing fails yet
  EXPECT_TRUE(link.frames.empty());
  ASSERT_TRUE(fetcher.wait_idle(60000));
  fetcher.deliver();
  EXPECT_EQ(server.awaiting_peer(), 0u);
  ASSERT_EQ(link.frames.size(), 2u);  // agent-1's two chunks
  EXPECT_EQ(link.frames[0].first, "agent-1");
  ASSERT_EQ(link.messages.size(), 1u);  // agent-2: no peer has it
  const auto* e = std::get_if<proto::ErrorMsg>(&link.messages[0].second);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(link.messages[0].first, "agent-2");
  EXPECT_EQ(e->code, "not_found");
  EXPECT_EQ(e->ref_id, gone);
  EXPECT_NE(e->message.find("no peer coordinator gave it"), std::string::npos) << e->message;
  // Now here: served at once.
  server.on_fetch("agent-3", {sha, 0, 1024});
  EXPECT_EQ(link.frames.size(), 3u);
}

// The prefetch pass: a real store, a recording fetcher, a fake clock.
struct RecordingFetcher : MissingArtifacts {
  std::vector<std::string> wanted;
  std::set<std::string> under_way;
  std::vector<Listener> listeners;
  bool full = false;
  bool want(const store::ReleaseRow& r) override {
    if (full) return false;
    wanted.push_back(r.version);
    under_way.insert(r.sha256);
    return true;
  }
  bool fetching(const std::string& sha) const override { return under_way.count(sha) > 0; }
  void subscribe(Listener f) override { listeners.push_back(std::move(f)); }
  void deliver() override {}
  void end(const std::string& sha, const Status& st) {
    under_way.erase(sha);
    for (auto& f : listeners) f(sha, st);
  }
};

// The prefetch pass's world: a real store naming releases v0..v(n-1) of "web" (9 bytes each;
// their digests in `shas`), an artifact dir holding v0's, and a recording fetcher.
struct PrefetchWorld {
  TempDir dir;
  std::unique_ptr<store::Store> store = testing::open_store(dir.path + "/coordinator.db");
  ArtifactStore artifacts{dir.path + "/artifacts"};
  std::vector<std::string> shas;
  RecordingFetcher fetcher;
  explicit PrefetchWorld(int n) {
    if (!store) throw std::runtime_error("cannot open the store");
    if (!artifacts.init().ok()) throw std::runtime_error("cannot make the artifact dir");
    for (int i = 0; i < n; ++i) {
      shas.push_back(sha256_hex("release " + std::to_string(i)));
      if (!store->put_release({"web", "v" + std::to_string(i), shas.back(), 9, "", i, "", ""}).ok())
        throw std::runtime_error("cannot store a release");
    }
    auto up = artifacts.upload(shas[0], 9, 0, "release 0");
    if (!up || !up->complete) throw std::runtime_error("cannot store v0's artifact");
  }
};

TEST(PeerPrefetch, EachPassAsksForAFewMissingArtifactsAndBacksOffAfterAFailure) {
  PrefetchWorld w(7);  // v0 is here
  auto& [dir, store, artifacts, shas, fetcher] = w;
  PeerPrefetch::Options o;
  o.period_ms = 2000;
  o.max_per_pass = 4;
  o.retry_ms = 5000;
  PeerPrefetch prefetch(*store, artifacts, fetcher, o);
  FakeClock clock;

  prefetch.tick(clock.now_ms());
  EXPECT_EQ(fetcher.wanted, (std::vector<std::string>{"v1", "v2", "v3", "v4"}));  // oldest first, four a pass
  EXPECT_EQ(prefetch.missing(), 6u);
  clock.advance(1999);
  prefetch.tick(clock.now_ms());  // not due
  EXPECT_EQ(fetcher.wanted.size(), 4u);
  clock.advance(1);
  prefetch.tick(clock.now_ms());  // under way ones are not asked again
  EXPECT_EQ(fetcher.wanted, (std::vector<std::string>{"v1", "v2", "v3", "v4", "v5", "v6"}));

  // v1 arrives; v2 fails: not asked again before its backoff, then again; a second failure waits twice as long.
  ASSERT_TRUE(artifacts.upload(shas[1], 9, 0, "release 1")->complete);
  fetcher.end(shas[1], Status::Ok());
  fetcher.end(shas[2], make_error("unavailable", "no peer"));
  fetcher.wanted.clear();
  clock.advance(2000);
  prefetch.tick(clock.now_ms());
  EXPECT_TRUE(fetcher.wanted.empty());
  EXPECT_EQ(prefetch.missing(), 5u);
  clock.advance(4000);  // 6 s after the failure was recorded at the pass before
  prefetch.tick(clock.now_ms());
  EXPECT_EQ(fetcher.wanted, std::vector<std::string>{"v2"});
  fetcher.end(shas[2], make_error("unavailable", "no peer"));
  fetcher.wanted.clear();
  for (int i = 0; i < 4; ++i) {  // 8 s: still waiting out the doubled 10 s
    clock.advance(2000);
    prefetch.tick(clock.now_ms());
  }
  EXPECT_TRUE(fetcher.wanted.empty());
  clock.advance(2000);
  prefetch.tick(clock.now_ms());
  EXPECT_EQ(fetcher.wanted, std::vector<std::string>{"v2"});

  // A full queue: nothing is asked for, and the next pass goes on.
  fetcher.end(shas[2], make_error("unavailable", "no peer"));
  fetcher.full = true;
  fetcher.wanted.clear();
  clock.advance(60000);
  prefetch.prefetch_missing(clock.now_ms());
  EXPECT_TRUE(fetcher.wanted.empty());
}

// Records what it is told; a failing record is refused until `fail` is cleared.
struct RecordingCopies : ArtifactCopies {
  std::map<std::string, bool> held;  // sha -> held
  int calls = 0;
  bool fail = false;
  Status record(const std::vector<std::string>& h, const std::vector<std::string>& lacking) override {
    ++calls;
    if (fail) return make_error("etcd", "unreachable");
    for (const auto& sha : h) held[sha] = true;
    for (const auto& sha : lacking) held[sha] = false;
    return Status::Ok();
  }
  Expected<Holders> holders(const std::string&) override { return Holders{}; }
};

TEST(PeerPrefetch, EachArtifactHereOrFetchedIsRecordedAsHeldAndEachMissingOneAsNotOnce) {
  PrefetchWorld w(3);  // v0 is here
  auto& [dir, store, artifacts, shas, fetcher] = w;
  RecordingCopies copies;
  copies.fail = true;
  PeerPrefetch prefetch(*store, artifacts, fetcher);
  prefetch.set_copies(&copies);
  FakeClock clock;

  // etcd out of reach: nothing recorded, and the next pass tries again (one write a pass).
  prefetch.tick(clock.now_ms());
  EXPECT_EQ(copies.calls, 1);
  EXPECT_TRUE(copies.held.empty());
  copies.fail = false;
  clock.advance(2000);
  prefetch.tick(clock.now_ms());
  EXPECT_EQ(copies.held, (std::map<std::string, bool>{{shas[0], true}, {shas[1], false}, {shas[2], false}}));
  EXPECT_EQ(copies.calls, 2);

  // Recorded once per run: a later pass writes nothing new.
  copies.calls = 0;
  clock.advance(2000);
  prefetch.tick(clock.now_ms());
  EXPECT_EQ(copies.calls, 0);

  // A fetch that ends well is recorded at once, not at the next pass; a failed one is not.
  ASSERT_TRUE(artifacts.upload(shas[1], 9, 0, "release 1")->complete);
  fetcher.end(shas[1], Status::Ok());
  fetcher.end(shas[2], make_error("unavailable", "no peer"));
  EXPECT_EQ(copies.calls, 1);
  EXPECT_TRUE(copies.held[shas[1]]);
  EXPECT_FALSE(copies.held[shas[2]]);
}

}  // namespace
}  // namespace gantry::coordinator
