#include <gtest/gtest.h>

#include "agent/config/agent_config.h"
#include "agent/fetch/fetcher.h"
#include "agent_test_util.h"
#include "common/util/fs.h"
#include "common/util/sha256.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

std::vector<proto::FetchChunk> requests(const std::vector<proto::Message>& sent) {
  std::vector<proto::FetchChunk> out;
  for (const auto& m : sent)
    if (auto* f = std::get_if<proto::FetchChunk>(&m)) out.push_back(*f);
  return out;
}

const std::string kSha(64, 'a');

}  // namespace

TEST(AgentFetcher, WindowOutOfOrderChunksAndResume) {
  TempDir t;
  FakeClock clock;
  std::string data(3 * Fetcher::kChunkBytes + 100, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  std::vector<proto::Message> sent;
  // A partial file from an earlier run: the first chunk is already there.
  write_text(t / "dl/x.part", data.substr(0, Fetcher::kChunkBytes));
  const std::string sha = sha256_hex(data);
  Fetcher f(t / "dl/x.part", sha, data.size(), clock, [&](const proto::Message& m) { sent.push_back(m); });
  ASSERT_TRUE(f.start().ok());
  auto reqs = requests(sent);
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].offset, Fetcher::kChunkBytes);
  EXPECT_EQ(reqs[2].length, 100u);
  // Answer the last two first; nothing completes until the gap is filled.
  for (int i : {2, 1, 0}) {
    f.on_chunk({sha, reqs[i].offset, data.size(), data.substr(reqs[i].offset, reqs[i].length)});
    if (i) {
      EXPECT_EQ(f.state(), Fetcher::State::kRunning);
    }
  }
  f.on_chunk({sha, reqs[0].offset, data.size(), data.substr(reqs[0].offset, reqs[0].length)});  // duplicate: ignored
  EXPECT_EQ(f.state(), Fetcher::State::kComplete);
  EXPECT_EQ(f.digest(), sha) << "hashed while written, the resumed prefix read back from disk";
  EXPECT_EQ(read_text(t / "dl/x.part"), data);
}

TEST(AgentFetcher, ShortAndOversizedChunksInOrder) {
  TempDir t;
  FakeClock clock;
  std::string data(2 * Fetcher::kChunkBytes, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  std::vector<proto::Message> sent;
  const std::string sha = sha256_hex(data);
  Fetcher f(t / "s.part", sha, data.size(), clock, [&](const proto::Message& m) { sent.push_back(m); });
  ASSERT_TRUE(f.start().ok());
  auto reqs = requests(sent);
  ASSERT_EQ(reqs.size(), 2u);
  // A short answer is written at once and the rest is asked for again.
  f.on_chunk({sha, 0, data.size(), data.substr(0, 1000)});
  EXPECT_EQ(f.received(), 1000u);
  auto again = requests(sent).back();
  EXPECT_EQ(again.offset, 1000u);
  EXPECT_EQ(again.length, Fetcher::kChunkBytes - 1000);
  // More than was asked: only the asked bytes are kept.
  f.on_chunk({sha, 1000, data.size(), data.substr(1000) + "junk"});
  EXPECT_EQ(f.received(), Fetcher::kChunkBytes);
  f.on_chunk({sha, reqs[1].offset, data.size(), data.substr(reqs[1].offset)});
  EXPECT_EQ(f.state(), Fetcher::State::kComplete);
  EXPECT_EQ(f.digest(), sha);
  EXPECT_EQ(read_text(t / "s.part"), data);
}

// The file is written with O_DIRECT where the file system takes it (chunks gathered in an
// aligned bounce buffer, the last piece padded to a block and the file cut back): the file on
// disk is always a prefix of the artifact, exactly the bytes received once the fetcher stops, so
// an interrupted download resumes from its size. Anything unaligned falls back to the page
// cache for the rest of the download with the same result.
TEST(AgentFetcher, DirectWritesKeepTheExactPrefixAndFallBackWhenUnaligned) {
  TempDir t;
  FakeClock clock;
  std::string data(3 * Fetcher::kChunkBytes + 4097, '\0');  // the last piece is not a whole block
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 5);
  const std::string sha = sha256_hex(data);
  auto noop = [](const proto::Message&) {};
  auto feed = [&](Fetcher& f, uint64_t from, uint64_t to) {
    for (uint64_t off = from; off < to; off += Fetcher::kChunkBytes)
      f.on_chunk({sha, off, data.size(), data.substr(off, Fetcher::kChunkBytes)});
  };
  {  // In order, interrupted after two chunks, then resumed by a new fetcher.
    {
      Fetcher f(t / "d.part", sha, data.size(), clock, noop);
      ASSERT_TRUE(f.start().ok());
      feed(f, 0, 2 * Fetcher::kChunkBytes);
      EXPECT_EQ(f.received(), 2 * Fetcher::kChunkBytes);
    }  // stopped (the agent shuts down): the batch not yet written goes to disk
    EXPECT_EQ(read_text(t / "d.part"), data.substr(0, 2 * Fetcher::kChunkBytes));
    Fetcher f(t / "d.part", sha, data.size(), clock, noop);
    ASSERT_TRUE(f.start().ok());
    feed(f, 2 * Fetcher::kChunkBytes, data.size());
    ASSERT_EQ(f.state(), Fetcher::State::kComplete) << f.error();
    EXPECT_EQ(f.digest(), sha);
    EXPECT_FALSE(f.direct()) << "the bounce buffer is released once complete";
    EXPECT_EQ(read_text(t / "d.part"), data) << "no padding left behind the last piece";
  }
  {  // A prefix that does not end on a block: the page cache from the start.
    write_text(t / "u.part", data.substr(0, 1000));
    Fetcher f(t / "u.part", sha, data.size(), clock, noop);
    ASSERT_TRUE(f.start().ok());
    EXPECT_FALSE(f.direct());
    f.on_chunk({sha, 1000, data.size(), data.substr(1000, Fetcher::kChunkBytes)});
    feed(f, 1000 + Fetcher::kChunkBytes, data.size());
    ASSERT_EQ(f.state(), Fetcher::State::kComplete) << f.error();
    EXPECT_EQ(read_text(t / "u.part"), data);
  }
  {  // A short answer in the middle ends O_DIRECT for the rest of the download.
    Fetcher f(t / "s.part", sha, data.size(), clock, noop);
    ASSERT_TRUE(f.start().ok());
    f.on_chunk({sha, 0, data.size(), data.substr(0, 1000)});
    EXPECT_FALSE(f.direct());
    f.on_chunk({sha, 1000, data.size(), data.substr(1000, Fetcher::kChunkBytes - 1000)});
    feed(f, Fetcher::kChunkBytes, data.size());
    ASSERT_EQ(f.state(), Fetcher::State::kComplete) << f.error();
    EXPECT_EQ(f.digest(), sha);
    EXPECT_EQ(read_text(t / "s.part"), data);
  }
}

// The digest is checked before the fetch completes: wrong bytes (from the wire, or a corrupt
// prefix a restarted agent resumes from) fail it and delete the file; nothing gets extracted.
TEST(AgentFetcher, WrongBytesFailTheDigestAndDeleteTheFile) {
  TempDir t;
  FakeClock clock;
  std::string data(2 * Fetcher::kChunkBytes + 7, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 5 + 1);
  const std::string sha = sha256_hex(data);
  auto noop = [](const proto::Message&) {};
  {
    Fetcher f(t / "w.part", sha, data.size(), clock, noop);
    ASSERT_TRUE(f.start().ok());
    std::string bad = data;
    bad[Fetcher::kChunkBytes + 3] ^= 1;
    for (uint64_t off = 0; off < data.size(); off += Fetcher::kChunkBytes)
      f.on_chunk({sha, off, data.size(), bad.substr(off, Fetcher::kChunkBytes)});
    EXPECT_EQ(f.state(), Fetcher::State::kFailed);
    EXPECT_EQ(f.error().rfind("digest mismatch", 0), 0u) << f.error();
    EXPECT_TRUE(f.digest().empty());
    EXPECT_FALSE(fs::exists(t / "w.part"));
  }
  {
    // A restart left a prefix that is not the artifact's: the rest arrives intact, the whole
    // file is still checked.
    std::string prefix = data.substr(0, Fetcher::kChunkBytes);
    prefix[10] ^= 1;
    write_text(t / "r.part", prefix);
    Fetcher f(t / "r.part", sha, data.size(), clock, noop);
    ASSERT_TRUE(f.start().ok());
    for (uint64_t off = Fetcher::kChunkBytes; off < data.size(); off += Fetcher::kChunkBytes)
      f.on_chunk({sha, off, data.size(), data.substr(off, Fetcher::kChunkBytes)});
    EXPECT_EQ(f.state(), Fetcher::State::kFailed);
    EXPECT_EQ(f.error().rfind("digest mismatch", 0), 0u) << f.error();
    EXPECT_FALSE(fs::exists(t / "r.part"));
  }
  {
    // Found complete (killed after the last write): no digest from the fetcher, so the driver
    // reads the file back and checks it (Driver::finish_download with an empty digest).
    write_text(t / "c.part", data);
    Fetcher f(t / "c.part", sha, data.size(), clock, noop);
    ASSERT_TRUE(f.start().ok());
    EXPECT_EQ(f.state(), Fetcher::State::kComplete);
    EXPECT_TRUE(f.digest().empty());
  }
}

TEST(AgentFetcher, CreditWindowIsBounded) {
  TempDir t;
  FakeClock clock;
  std::vector<proto::Message> sent;
  uint64_t size = 20ULL * Fetcher::kChunkBytes;
  Fetcher f(t / "x.part", kSha, size, clock, [&](const proto::Message& m) { sent.push_back(m); });
  ASSERT_TRUE(f.start().ok());
  EXPECT_EQ(requests(sent).size(), Fetcher::kWindow);
  auto first = requests(sent)[0];
  f.on_chunk({kSha, first.offset, size, std::string(first.length, 'z')});
  EXPECT_EQ(requests(sent).size(), Fetcher::kWindow + 1) << "one credit back, one new request";
  sent.clear();
  f.resend();
  EXPECT_EQ(requests(sent).size(), Fetcher::kWindow);
}

TEST(AgentFetcher, FailsOnStallSizeMismatchAndError) {
  TempDir t;
  FakeClock clock;
  auto noop = [](const proto::Message&) {};
  {
    Fetcher f(t / "a.part", kSha, 1000, clock, noop);
    ASSERT_TRUE(f.start().ok());
    clock.advance(Fetcher::kStallMs - 1);
    f.check(clock.now_ms());
    EXPECT_EQ(f.state(), Fetcher::State::kRunning);
    clock.advance(1);
    f.check(clock.now_ms());
    EXPECT_EQ(f.state(), Fetcher::State::kFailed);
    EXPECT_NE(f.error().find("no chunk received"), std::string::npos);
  }
  {
    Fetcher f(t / "b.part", kSha, 1000, clock, noop);
    ASSERT_TRUE(f.start().ok());
    f.on_chunk({kSha, 0, 999, std::string(10, 'x')});
    EXPECT_EQ(f.state(), Fetcher::State::kFailed);
  }
  {
    Fetcher f(t / "c.part", kSha, 1000, clock, noop);
    ASSERT_TRUE(f.start().ok());
    f.on_error({"not_found", "gone", static_cast<uint16_t>(proto::MsgType::kFetchChunk), std::string(64, 'b')});
    EXPECT_EQ(f.state(), Fetcher::State::kRunning) << "another artifact's error";
    f.on_error({"not_found", "gone", static_cast<uint16_t>(proto::MsgType::kFetchChunk), kSha});
    EXPECT_EQ(f.state(), Fetcher::State::kFailed);
  }
}

TEST(AgentConfig, ParsesCommandLineAndIni) {
  TempDir t;
  write_text(t / "agent.ini",
             "host_id = from-file\ncoordinator = tcp://10.0.0.1:7600\nlabel = zone=eu-1\ninsecure_dev = true\n"
             "heartbeat_interval_ms = 500\n"
             "[service.web]\ndriver = binary\nroot = /srv/web/\nrestart_command = systemctl restart web\n"
             "http_probe = http://127.0.0.1:18081/health\nhttp_probe = http://127.0.0.1:18081/ready\n"
             "tcp_probe = 127.0.0.1:18081\nmin_healthy_ms = 100\nretain = 5\n"
             "[service.api.v2]\nroot = /srv/api\nrestart_command = true\n");
  std::string cfgpath = t / "agent.ini";
  const char* argv[] = {"gantry-agent", "--config", cfgpath.c_str(), "--host-id", "cli-host",
                        "--label",      "rack=r1",  "--state-dir",   "/tmp/st"};
  auto p = parse_args(9, argv);
  ASSERT_TRUE(p.ok()) << p.error().message;
  const AgentConfig& c = p->config;
  EXPECT_EQ(c.host_id, "cli-host") << "the command line wins";
  EXPECT_EQ(c.coordinator, "tcp://10.0.0.1:7600");
  EXPECT_EQ(c.state_dir, "/tmp/st");
  EXPECT_TRUE(c.insecure_dev);
  EXPECT_EQ(c.heartbeat_interval_ms, 500);
  EXPECT_EQ(c.labels.at("zone"), "eu-1");
  EXPECT_EQ(c.labels.at("rack"), "r1");
  ASSERT_EQ(c.services.size(), 2u);
  const auto& web = c.services.at("web");
  EXPECT_EQ(web.root, "/srv/web");
  EXPECT_EQ(web.http_probes.size(), 2u);
  EXPECT_EQ(web.tcp_probes.size(), 1u);
  EXPECT_EQ(web.min_healthy_ms, 100);
  EXPECT_EQ(web.healthy_deadline_ms, 30000);
  EXPECT_EQ(web.retain, 5u);
  EXPECT_TRUE(c.services.count("api.v2"));
}

TEST(AgentConfig, RefusesBadConfigs) {
  TempDir t;
  auto parse = [&](const std::string& ini) {
    write_text(t / "a.ini", ini);
    std::string path = t / "a.ini";
    const char* argv[] = {"gantry-agent", "--config", path.c_str(), "--state-dir", "/tmp/x"};
    return parse_args(5, argv);
  };
  const std::string ok_svc = "[service.web]\nroot = /srv/web\nrestart_command = true\n";
  EXPECT_TRUE(parse("host_id = h\n" + ok_svc).ok());
  EXPECT_FALSE(parse("host_id = h\n").ok()) << "no service";
  EXPECT_FALSE(parse("host_id = ../h\n" + ok_svc).ok());
  EXPECT_FALSE(parse("host_id = h\nbogus = 1\n" + ok_svc).ok());
  EXPECT_FALSE(parse("host_id = h\n[service.web]\nroot = relative\nrestart_command = true\n").ok());
  EXPECT_FALSE(parse("host_id = h\n" + ok_svc + "driver = container\n").ok());
  EXPECT_FALSE(parse("host_id = h\n" + ok_svc + "http_probe = ftp://x/\n").ok());
  EXPECT_FALSE(parse("host_id = h\n" + ok_svc + "min_healthy_ms = abc\n").ok());
  EXPECT_FALSE(parse("host_id = h\n[service.-x]\nroot = /srv\nrestart_command = true\n").ok());
  const char* argv[] = {"gantry-agent"};
  EXPECT_FALSE(parse_args(1, argv).ok()) << "--config is required";
}
