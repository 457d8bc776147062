// Artifact serving under the chunk budget, shared fairly between hosts: a real artifact file and
// store, a link that holds the frames it is given (as ZeroMQ holds them until the peer reads)
// and frees them when the test says the host read them. No sockets, no sleeps.
#include "coordinator/server/artifact_server.h"

#include <fstream>

#include <gtest/gtest.h>

#include "common/protocol/codec.h"
#include "tests/unit/coordinator_test_util.h"

namespace gantry::coordinator {
namespace {

using testing::TempDir;

struct HoldingLink : AgentLink {
  std::map<std::string, std::vector<zmq::message_t>> frames;  // unread, per connection
  std::vector<std::pair<std::string, proto::Message>> messages;
  void send(const std::string& identity, const proto::Message& m) override { messages.emplace_back(identity, m); }
  Status send_frame(const std::string& identity, zmq::message_t&& frame) override {
    frames[identity].push_back(std::move(frame));
    return Status::Ok();
  }
  size_t held(const std::string& identity) { return frames[identity].size(); }
  // The host read everything sent to it: its frames are freed.
  void read_all(const std::string& identity) { frames[identity].clear(); }
};

class ArtifactServerTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kChunk = 64 * 1024;
  void SetUp() override {
    store = testing::open_store(dir.path + "/coordinator.db");
    ASSERT_TRUE(store);
    artifacts = std::make_unique<ArtifactStore>(dir.path + "/artifacts");
    ASSERT_TRUE(artifacts->init().ok());
    const std::string path = artifacts->path_for(sha);
    std::ofstream(path, std::ios::binary) << std::string(kSize, 'x');
    store::ReleaseRow r{"web", "v2", sha, kSize, path, 1, "", ""};
    ASSERT_TRUE(store->put_release(r).ok());
  }
  // One Chunk frame: the chunk behind its encoded head.
  int64_t frame() const {
    return static_cast<int64_t>(proto::encode_chunk_head(sha, 0, kSize, kChunk).size() + kChunk);
  }
  // Budget: 8 frames unless said otherwise. A frame goes out while the bytes queued are under
  // the budget (and the host's under its share), so either is passed by less than one frame.
  std::unique_ptr<ArtifactServer> make(int64_t frames = 8) {
    return std::make_unique<ArtifactServer>(*store, *artifacts, link, metrics, clock, frames * frame());
  }
  // `n` chunk requests of one host, from `first` on.
  void fetch(ArtifactServer& s, const std::string& host, int n, int first = 0) {
    for (int i = first; i < first + n; ++i)
      s.on_fetch(host, proto::FetchChunk{sha, static_cast<uint64_t>(i) * kChunk, kChunk});
  }

  static constexpr uint64_t kSize = 64ull * kChunk;
  const std::string sha = std::string(64, 'b');
  TempDir dir;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<ArtifactStore> artifacts;
  HoldingLink link;
  Metrics metrics;
  FakeClock clock;
};

TEST_F(ArtifactServerTest, AHostAloneGetsAtMostAQuarterOfTheBudget) {
  auto s = make();
  fetch(*s, "a", 16);
  EXPECT_EQ(link.held("a"), 2u);  // a quarter of 8 frames
  EXPECT_TRUE(s->has_deferred());
  EXPECT_LT(s->bytes_queued("a"), 3 * frame());  // heads differ by a few bytes with the offset
  link.read_all("a");
  s->serve_deferred();
  EXPECT_EQ(link.held("a"), 2u);  // the next two, as it reads
}

TEST_F(ArtifactServerTest, AHostThatStopsReadingDoesNotStallTheOthers) {
  auto s = make();
  fetch(*s, "thief", 64);  // asks for everything and never reads
  const size_t stolen = link.held("thief");
  // Every other host is served at once, and keeps being served as it reads.
  for (int round = 0; round < 10; ++round) {
    for (const char* h : {"b", "c", "d"}) {
      fetch(*s, h, 1, round);
      s->serve_deferred();
      EXPECT_EQ(link.held(h), 1u) << h << " round " << round;
      link.read_all(h);
    }
  }
  EXPECT_EQ(link.held("thief"), stolen);  // it got no more than its share
  EXPECT_LT(s->bytes_queued(), 8 * frame());
  // Its requests wait, then lose their place: nothing of it is left after the wait limit.
  clock.advance(ArtifactServer::kMaxWaitMs);
  s->serve_deferred();
  EXPECT_FALSE(s->has_deferred());
}

TEST_F(ArtifactServerTest, WaitingHostsAreServedInTurnNotInArrivalOrder) {
  auto s = make(4);
  fetch(*s, "a", 20);
  fetch(*s, "b", 20);
  fetch(*s, "c", 20);
  // The budget is spent; as frames are read, each host gets its turn.
  for (int i = 0; i < 5; ++i) {
    for (const char* h : {"a", "b", "c"}) link.read_all(h);
    s->serve_deferred();
    EXPECT_GE(link.held("a"), 1u);
    EXPECT_GE(link.held("b"), 1u);
    EXPECT_GE(link.held("c"), 1u);
    EXPECT_LE(s->bytes_queued(), 4 * frame());
  }
}

TEST_F(ArtifactServerTest, BadRequestsGetErrorsNotFrames) {
  auto s = make();
  s->on_fetch("a", proto::FetchChunk{std::string(64, 'c'), 0, kChunk});
  s->on_fetch("a", proto::FetchChunk{sha, kSize + 1, kChunk});
  ASSERT_EQ(link.messages.size(), 2u);
  EXPECT_EQ(std::get<proto::ErrorMsg>(link.messages[0].second).code, "not_found");
  EXPECT_EQ(std::get<proto::ErrorMsg>(link.messages[1].second).code, "range");
  EXPECT_EQ(link.held("a"), 0u);
}

}  // namespace
}  // namespace gantry::coordinator
