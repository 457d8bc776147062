// Releases on every coordinator (docs/HIGH_AVAILABILITY.md): the peer artifact fetcher of a
// coordinator that lacks an artifact, run in this process (its own SQLite store and artifact
// dir, as a standby's), against real coordinator processes that hold it or do not: a 6 MiB
// release copied over CURVE with the installation's shared server keypair and checked; a
// coordinator without the artifact skipped for the next; a lying peer (a fake in this process)
// refused with nothing kept; and keys that are not the server key given no peer role.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/protocol/codec.h"
#include "common/security/keys.h"
#include "common/transport/zmq_transport.h"
#include "common/util/sha256.h"
#include "coordinator/server/artifact_server.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/peer_artifact_fetcher.h"
#include "coordinator/server/peer_prefetch.h"
#include "coordinator/store/store.h"
#include "tests/support/fleet.h"

namespace gantry::testing {
namespace {

using coordinator::ArtifactStore;
using coordinator::FixedPeerEndpoints;
using coordinator::PeerArtifactFetcher;
using coordinator::PeerPrefetch;
using coordinator::ZmqChunkSource;
using nlohmann::json;

// `n` bytes no compressor or accident makes alike.
std::string random_bytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint64_t x = 0x9E3779B97F4A7C15ull ^ seed;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x >> 32);
  }
  return s;
}

// The installation's server keys as a coordinator holds them (Config::curve).
transport::CurveOptions server_keys(const Fleet& f) {
  auto kp = security::read_curve_secret(f.keys_dir() + "/coordinator.key");
  EXPECT_TRUE(kp);
  transport::CurveOptions c;
  if (kp) {
    c.public_key = kp->public_z85;
    c.secret_key = kp->secret_z85;
  }
  return c;
}

// One operator request as `client` (CURVE client options; disabled: plaintext); nullopt when
// nothing answers within `timeout_ms` (a refused handshake answers nothing).
std::optional<proto::OpReply> op_request(const std::string& endpoint, const transport::CurveOptions& client,
                                         const std::string& command, const json& args, int timeout_ms = 5000) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  transport::SocketOptions o;
  o.curve = client;
  transport::configure(s, o);
  EXPECT_TRUE(transport::connect(s, endpoint).ok());
  EXPECT_TRUE(transport::send(s, proto::OpRequest{"t-1", command, args}).ok());
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms));
  if (!(item.revents & ZMQ_POLLIN)) return std::nullopt;
  auto frame = transport::recv_frame(s);
  if (!frame) return std::nullopt;
  auto msg = proto::decode(*frame);
  if (!msg || !std::holds_alternative<proto::OpReply>(*msg)) return std::nullopt;
  return std::get<proto::OpReply>(*msg);
}

// A coordinator "B" that lacks the artifacts: its own store with the release rows (as the
// shared store would give it) and its own artifact dir.
struct Standby {
  TempDir dir{"gantry-standby"};
  std::unique_ptr<store::Store> store;
  std::unique_ptr<ArtifactStore> artifacts;
  Standby() {
    auto st = store::Store::open(dir.sub("coordinator.db"));
    if (!st) throw std::runtime_error(st.error().message);
    store = std::move(*st);
    artifacts = std::make_unique<ArtifactStore>(dir.sub("artifacts"));
    if (!artifacts->init().ok()) throw std::runtime_error("artifact dir");
  }
  void knows(const std::string& version, const std::string& sha, uint64_t size) {
    // The path is where the coordinator that stored it keeps it: elsewhere.
    ASSERT_TRUE(store->put_release({"web", version, sha, size, "/var/lib/elsewhere/" + sha, 1, "", ""}).ok());
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(artifacts->dir())) out.push_back(e.path().filename());
    return out;
  }
};

// The real chunk source, with a record of what each request to each peer came to.
struct RecordedSource : coordinator::ChunkSource {
  explicit RecordedSource(std::unique_ptr<ChunkSource> real) : real_(std::move(real)) {}
  Expected<Piece> read(const std::string& endpoint, const std::string& sha256, uint64_t offset, uint32_t length,
                       const std::atomic<bool>& cancel) override {
    auto r = real_->read(endpoint, sha256, offset, length, cancel);
    std::lock_guard<std::mutex> lk(*mu);
    log->emplace_back(endpoint, r ? "ok" : r.error().code);
    return r;
  }
  std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
  std::shared_ptr<std::vector<std::pair<std::string, std::string>>> log =
      std::make_shared<std::vector<std::pair<std::string, std::string>>>();

 private:
  std::unique_ptr<ChunkSource> real_;
};

// A release of `size` random bytes uploaded to a real coordinator with the CLI; its sha256.
std::string upload(Fleet& f, const std::string& version, size_t size, uint32_t seed) {
  const std::string path = f.dir() + "/" + version + ".bin";
  const std::string bytes = random_bytes(size, seed);
  std::ofstream(path, std::ios::binary) << bytes;
  auto r = f.cli({"release", "upload", path, "--service", "web", "--version", version}, 60000);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  return sha256_hex(bytes);
}

Fleet coordinator_only(bool insecure) {
  FleetOptions o;
  o.insecure = insecure;
  return Fleet(0, o);
}

TEST(PeerArtifacts, AStandbyCopiesARealReleaseWithTheSharedServerKeySkippingACoordinatorWithoutIt) {
  Fleet a(0);
  Fleet empty(0);
  // One installation: the second coordinator holds the same server keypair.
  for (const char* f : {"/coordinator.key", "/coordinator.pub"})
    std::filesystem::copy_file(a.keys_dir() + f, empty.keys_dir() + f,
                               std::filesystem::copy_options::overwrite_existing);
  a.start_coordinator();
  empty.start_coordinator();
  constexpr size_t kSize = 6 * 1024 * 1024 + 123;  // six full chunks and a short one
  const std::string sha = upload(a, "v1", kSize, 1);

  Standby b;
  b.knows("v1", sha, kSize);
  FixedPeerEndpoints peers({empty.endpoints().operator_, a.endpoints().operator_});
  auto source = std::make_unique<RecordedSource>(std::make_unique<ZmqChunkSource>(server_keys(a)));
  auto mu = source->mu;
  auto asked = source->log;
  PeerArtifactFetcher fetcher(b.artifacts->dir(), peers, std::move(source));
  PeerPrefetch prefetch(*b.store, *b.artifacts, fetcher);
  std::vector<std::pair<std::string, Status>> ended;
  fetcher.subscribe([&](const std::string& s, const Status& st) { ended.emplace_back(s, st); });

  const auto t0 = std::chrono::steady_clock::now();
  prefetch.prefetch_missing(0);
  EXPECT_EQ(prefetch.missing(), 1u);
  ASSERT_TRUE(fetcher.wait_idle(120000));
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  fetcher.deliver();
  ASSERT_EQ(ended.size(), 1u);
  ASSERT_TRUE(ended[0].second.ok()) << ended[0].second.error().message << a.diagnostics();
  EXPECT_EQ(b.files(), std::vector<std::string>{sha});  // no temp file left
  auto digest = sha256_file(b.artifacts->path_for(sha));
  ASSERT_TRUE(digest);
  EXPECT_EQ(*digest, sha);
  EXPECT_EQ(*b.artifacts->size_of(sha), kSize);
  {
    // The coordinator without it was asked once (the peer role let it answer: not_found), then
    // every chunk came from the one that has it.
    std::lock_guard<std::mutex> lk(*mu);
    ASSERT_EQ(asked->size(), 8u);
    EXPECT_EQ(asked->front(), std::make_pair(empty.endpoints().operator_, std::string("not_found")));
    for (size_t i = 1; i < asked->size(); ++i)
      EXPECT_EQ((*asked)[i], std::make_pair(a.endpoints().operator_, std::string("ok")));
  }
  std::printf("[ measured ] %zu bytes copied from a peer coordinator over CURVE in %lld ms\n", kSize,
              static_cast<long long>(ms));
  // The next pass finds nothing missing and asks for nothing.
  prefetch.prefetch_missing(10000);
  EXPECT_EQ(prefetch.missing(), 0u);
  EXPECT_FALSE(fetcher.fetching(sha));
}

TEST(PeerArtifacts, OnlyTheServerKeyIsAPeerAndAPeerMayOnlyReadAndCopy) {
  Fleet a(0);
  a.start_coordinator();
  const std::string sha = upload(a, "v1", 300000, 2);
  const auto server = server_keys(a);
  transport::CurveOptions as_peer;
  as_peer.public_key = server.public_key;
  as_peer.secret_key = server.secret_key;
  as_peer.server_public_key = server.public_key;
  const json chunk_args = {{"sha256", sha}, {"offset", 0u}, {"length", 1024u}};

  // The server key: the peer role. It reads and copies...
  auto r = op_request(a.endpoints().operator_, as_peer, "artifact-chunk", chunk_args);
  ASSERT_TRUE(r) << a.diagnostics();
  ASSERT_TRUE(r->ok) << r->error;
  EXPECT_EQ(r->result["size"], 300000u);
  EXPECT_EQ(r->result["data"].get_binary().size(), 1024u);
  r = op_request(a.endpoints().operator_, as_peer, "artifact-chunk",
                 {{"sha256", std::string(64, 'a')}, {"offset", 0u}, {"length", 1u}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error.rfind("not_found:", 0), 0u) << r->error;
  // ... and nothing else; the real CLI with the server key file sees the same.
  r = op_request(a.endpoints().operator_, as_peer, "rollout.start", {{"service", "web"}, {"version", "v1"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error.rfind("permission denied", 0), 0u) << r->error;
  auto cli = a.cli_as(a.keys_dir() + "/coordinator.key", {"--json", "status"});
  EXPECT_EQ(cli.exit_code, 0) << cli.out << cli.err;
  cli = a.cli_as(a.keys_dir() + "/coordinator.key", {"keys", "list"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_NE((cli.out + cli.err).find("permission denied"), std::string::npos) << cli.out << cli.err;

  // Any other key is judged by the allowlists: a viewer may not copy, an admin may, a key
  // nobody enrolled does not get past the handshake.
  auto viewer = security::generate_curve_keypair();
  ASSERT_TRUE(viewer);
  std::ofstream(a.dir() + "/viewer.pub") << viewer->public_z85 << "\n";
  cli = a.cli({"keys", "add-operator", "watcher", a.dir() + "/viewer.pub", "--role", "viewer"});
  ASSERT_EQ(cli.exit_code, 0) << cli.out << cli.err;
  transport::CurveOptions as_viewer{false, viewer->public_z85, viewer->secret_z85, server.public_key, "gantry"};
  r = op_request(a.endpoints().operator_, as_viewer, "artifact-chunk", chunk_args);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error.rfind("permission denied: artifact-chunk needs the admin role (or peer)", 0), 0u) << r->error;
  auto admin = security::read_curve_secret(a.keys_dir() + "/admin.key");
  ASSERT_TRUE(admin);
  transport::CurveOptions as_admin{false, admin->public_z85, admin->secret_z85, server.public_key, "gantry"};
  r = op_request(a.endpoints().operator_, as_admin, "artifact-chunk", chunk_args);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok) << r->error;
  auto stranger = security::generate_curve_keypair();
  ASSERT_TRUE(stranger);
  transport::CurveOptions as_stranger{false, stranger->public_z85, stranger->secret_z85, server.public_key, "gantry"};
  EXPECT_FALSE(op_request(a.endpoints().operator_, as_stranger, "artifact-chunk", chunk_args, 2000));

  // A coordinator of another installation (another server keypair) copies nothing, keeps nothing.
  Standby b;
  b.knows("v1", sha, 300000);
  transport::CurveOptions other;
  other.public_key = stranger->public_z85;
  other.secret_key = stranger->secret_z85;
  FixedPeerEndpoints peers({a.endpoints().operator_});
  PeerArtifactFetcher::Options o;
  o.attempts_per_chunk = 1;
  PeerArtifactFetcher fetcher(b.artifacts->dir(), peers, std::make_unique<ZmqChunkSource>(other, 1000), o);
  std::optional<Status> ended;
  fetcher.subscribe([&](const std::string&, const Status& st) { ended = st; });
  ASSERT_TRUE(fetcher.want(*(*b.store->release("web", "v1"))));
  ASSERT_TRUE(fetcher.wait_idle(60000));
  fetcher.deliver();
  ASSERT_TRUE(ended);
  ASSERT_FALSE(ended->ok());
  EXPECT_NE(ended->error().message.find("did not answer"), std::string::npos) << ended->error().message;
  EXPECT_TRUE(b.files().empty());
  EXPECT_NE(a.coordinator_log().find("refused on gantry-operator: unknown operator key"), std::string::npos)
      << a.coordinator_log();
}

// A peer in this process that holds the key (or, plaintext, needs none) and lies: it answers
// every artifact-chunk with the right size and offset, but bytes of its own.
class LyingPeer {
 public:
  explicit LyingPeer(uint64_t size) : size_(size) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.bind("tcp://127.0.0.1:*");
    endpoint_ = sock_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { serve(); });
  }
  ~LyingPeer() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int answered() const { return answered_; }

 private:
  void serve() {
    for (int turn = 0; turn < 6000 && !stop_; ++turn) {  // at most 10 minutes
      zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      auto in = transport::recv_routed(sock_);
      if (!in) continue;
      auto msg = proto::decode(in->payload);
      if (!msg || !std::holds_alternative<proto::OpRequest>(*msg)) continue;
      const auto& req = std::get<proto::OpRequest>(*msg);
      const uint64_t offset = req.args.value("offset", uint64_t{0});
      const uint64_t length = std::min<uint64_t>(req.args.value("length", uint64_t{0}), size_ - offset);
      const std::string bytes = random_bytes(length, 99);
      proto::OpReply rep{req.request_id, true, "",
                         json{{"sha256", req.args.value("sha256", "")},
                              {"offset", offset},
                              {"size", size_},
                              {"data", json::binary(std::vector<uint8_t>(bytes.begin(), bytes.end()))}}};
      (void)transport::send_to(sock_, in->identity, rep);
      ++answered_;
    }
  }
  uint64_t size_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_{ctx_, zmq::socket_type::router};
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> answered_{0};
  std::thread thread_;
};

TEST(PeerArtifacts, InsecureDevALyingPeerIsRefusedWithNothingKeptAndTheHonestOneIsUsed) {
  Fleet a = coordinator_only(/*insecure=*/true);
  a.start_coordinator();
  constexpr size_t kSize = 5 * 1024 * 1024 + 7;
  const std::string sha = upload(a, "v1", kSize, 3);
  LyingPeer liar(kSize);
  Standby b;
  b.knows("v1", sha, kSize);
  const auto row = *(*b.store->release("web", "v1"));

  // The liar alone: refused at the digest, nothing of it kept.
  {
    FixedPeerEndpoints peers({liar.endpoint()});
    PeerArtifactFetcher fetcher(b.artifacts->dir(), peers, std::make_unique<ZmqChunkSource>(transport::CurveOptions{}));
    std::optional<Status> ended;
    fetcher.subscribe([&](const std::string&, const Status& st) { ended = st; });
    ASSERT_TRUE(fetcher.want(row));
    ASSERT_TRUE(fetcher.wait_idle(120000));
    fetcher.deliver();
    ASSERT_TRUE(ended);
    ASSERT_FALSE(ended->ok());
    EXPECT_NE(ended->error().message.find("sent bytes whose sha256 is"), std::string::npos) << ended->error().message;
    EXPECT_EQ(liar.answered(), 6);  // it was asked for every chunk, and believed in none
    EXPECT_TRUE(b.files().empty());
  }
  // The liar first, then the real coordinator (plaintext: --insecure-dev, any caller may).
  FixedPeerEndpoints peers({liar.endpoint(), a.endpoints().operator_});
  PeerArtifactFetcher fetcher(b.artifacts->dir(), peers, std::make_unique<ZmqChunkSource>(transport::CurveOptions{}));
  std::optional<Status> ended;
  fetcher.subscribe([&](const std::string&, const Status& st) { ended = st; });
  ASSERT_TRUE(fetcher.want(row));
  ASSERT_TRUE(fetcher.wait_idle(120000));
  fetcher.deliver();
  ASSERT_TRUE(ended);
  ASSERT_TRUE(ended->ok()) << ended->error().message << a.diagnostics();
  EXPECT_EQ(b.files(), std::vector<std::string>{sha});
  EXPECT_EQ(*sha256_file(b.artifacts->path_for(sha)), sha);
}

// A leader whose store names a release it lacks: an agent's requests wait for the copy from a
// real peer and are then answered with the right bytes.
TEST(PeerArtifacts, AnAgentsChunkRequestsWaitForTheCopyFromARealPeerAndAreThenServed) {
  Fleet a = coordinator_only(/*insecure=*/true);
  a.start_coordinator();
  constexpr size_t kSize = 2 * 1024 * 1024 + 5;
  const std::string sha = upload(a, "v1", kSize, 4);
  Standby b;
  b.knows("v1", sha, kSize);
  struct Link : coordinator::AgentLink {
    std::vector<proto::Message> messages;
    std::vector<std::string> frames;
    void send(const std::string&, const proto::Message& m) override { messages.push_back(m); }
    Status send_frame(const std::string&, zmq::message_t&& frame) override {
      frames.push_back(frame.to_string());
      return Status::Ok();
    }
  } link;
  coordinator::Metrics metrics;
  FakeClock clock;
  coordinator::ArtifactServer server(*b.store, *b.artifacts, link, metrics, clock);
  FixedPeerEndpoints peers({a.endpoints().operator_});
  PeerArtifactFetcher fetcher(b.artifacts->dir(), peers, std::make_unique<ZmqChunkSource>(transport::CurveOptions{}));
  server.set_missing(&fetcher);
  server.on_fetch("agent", {sha, 0, 256 * 1024});
  server.on_fetch("agent", {sha, kSize - 5, 256 * 1024});
  EXPECT_EQ(server.awaiting_peer(), 2u);
  EXPECT_TRUE(link.frames.empty());
  ASSERT_TRUE(fetcher.wait_idle(120000));
  fetcher.deliver();
  EXPECT_TRUE(link.messages.empty());
  ASSERT_EQ(link.frames.size(), 2u);
  const std::string bytes = random_bytes(kSize, 4);
  auto first = proto::decode_chunk(link.frames[0]);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->total_size, kSize);
  EXPECT_EQ(first->data, std::string_view(bytes).substr(0, 256 * 1024));
  auto last = proto::decode_chunk(link.frames[1]);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->data, std::string_view(bytes).substr(kSize - 5));
}

}  // namespace
}  // namespace gantry::testing
