#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "agent/state/state_store.h"
#include "agent_test_util.h"
#include "common/util/fs.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

AgentState sample() {
  AgentState s;
  s.services["web"] = {"v2", "v1"};
  ActiveOrder a;
  a.order = {"o-3", 7, "web", "update", "v3", std::string(64, 'a'), 1234, 500, 9000, "", ""};
  a.phase = phase::kVerifying;
  a.from_version = "v2";
  a.started_wall_ms = 1700000000000;
  a.timings_ms = {{"fetch", 10}, {"stage", 20}};
  s.active = a;
  s.queue.push_back({"o-4", 8, "web", "rollback", "v1", std::string(64, 'b'), 99, 0, 0, "", ""});
  s.add_result({"o-2", 7, "web", "succeeded", "v2", "ok", {{"total", 42}}});
  return s;
}

}  // namespace

TEST(AgentState, SerializeRoundTrip) {
  AgentState s = sample();
  auto back = parse_state(serialize_state(s));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->services.at("web").current, "v2");
  EXPECT_EQ(back->services.at("web").previous, "v1");
  ASSERT_TRUE(back->active.has_value());
  EXPECT_EQ(back->active->order.order_id, "o-3");
  EXPECT_EQ(back->active->order.healthy_deadline_ms, 9000u);
  EXPECT_EQ(back->active->phase, "verifying");
  EXPECT_EQ(back->active->timings_ms.at("stage"), 20u);
  ASSERT_EQ(back->queue.size(), 1u);
  EXPECT_EQ(back->queue[0].kind, "rollback");
  ASSERT_NE(back->find_result("o-2"), nullptr);
  EXPECT_EQ(back->find_result("o-2")->timings_ms.at("total"), 42u);
  EXPECT_EQ(serialize_state(*back), serialize_state(s));
}

TEST(AgentState, RejectsCorruptOrHostileJournal) {
  EXPECT_FALSE(parse_state("{not json").ok());
  EXPECT_FALSE(parse_state("{}").ok());
  std::string text = serialize_state(sample());
  auto pos = text.find("\"v3\"");
  ASSERT_NE(pos, std::string::npos);
  std::string hostile = text.substr(0, pos) + "\"../../etc\"" + text.substr(pos + 4);
  auto r = parse_state(hostile);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "corrupt");
}

TEST(AgentState, KeepsOnlyTheLastResults) {
  AgentState s;
  for (int i = 0; i < 300; ++i) s.add_result({"o-" + std::to_string(i), 1, "web", "succeeded", "v1", "", {}});
  EXPECT_EQ(s.results.size(), AgentState::kMaxResults);
  EXPECT_EQ(s.find_result("o-0"), nullptr);
  EXPECT_NE(s.find_result("o-299"), nullptr);
}

TEST(AgentState, FileStoreRoundTripAndEmptyStart) {
  TempDir t;
  FileStateStore store(t / "state");
  auto empty = store.load();
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->active.has_value());
  ASSERT_TRUE(store.save(sample()).ok());
  auto back = store.load();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->active->order.version, "v3");
  // Nothing but the snapshot and the journal is left behind.
  std::set<std::string> names;
  for (auto& e : std::filesystem::directory_iterator(t / "state")) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"agent-state.json", "agent-state.journal"}));
}

TEST(AgentState, FailedWriteLeavesThePreviousJournal) {
  TempDir t;
  FileStateStore store(t / "state");
  AgentState first = sample();
  ASSERT_TRUE(store.save(first).ok());
  // A new store's first save is a snapshot. Block the temp file name so that write fails
  // before the rename (works as root too).
  FileStateStore again(t / "state");
  std::filesystem::create_directories(store.path() + ".tmp." + std::to_string(::getpid()) + "/x");
  AgentState second = sample();
  second.active.reset();
  Status st = again.save(second);
  EXPECT_FALSE(st.ok());
  auto back = store.load();
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->active.has_value()) << "the old journal must still be there";
}

TEST(AgentState, MemoryStoreInjectsFailures) {
  MemoryStateStore m;
  m.fail_next(1);
  Status st = m.save(sample());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "disk_full");
  EXPECT_TRUE(m.save(sample()).ok());
  EXPECT_EQ(m.saves(), 1);
}

namespace {

proto::Report result(int i) {
  return {"o-" + std::to_string(i),
          1,
          "web",
          i % 3 ? "succeeded" : "failed_reverted",
          "v" + std::to_string(i % 5),
          "message " + std::to_string(i),
          {{"total", static_cast<uint64_t>(i)}}};
}

std::string loaded_text(const std::string& dir) {
  FileStateStore fresh(dir);
  auto s = fresh.load();
  return s ? serialize_state(*s) : "error: " + s.error().message;
}

}  // namespace

// Saves after the first are records in the journal; a new process reads snapshot + records.
TEST(AgentStateJournal, RecordsAfterTheSnapshotReplay) {
  TempDir t;
  FileStateStore store(t / "state");
  ASSERT_TRUE(store.load().ok());
  AgentState s = sample();
  ASSERT_TRUE(store.save(s).ok());
  s.active->phase = phase::kSwapping;
  ASSERT_TRUE(store.save(s).ok());
  s.add_result(result(9));
  s.active.reset();
  s.queue.clear();
  s.services["web"] = {"v3", "v2"};
  ASSERT_TRUE(store.save(s).ok());
  EXPECT_EQ(store.snapshots(), 1) << "one snapshot, then records";
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(s));
  // The snapshot alone still holds the first state.
  auto snap = parse_state(*fs::read_file(store.path()));
  ASSERT_TRUE(snap.ok());
  EXPECT_TRUE(snap->active.has_value());
}

// save_lazy appends a record like save (no snapshot), only without its own fdatasync: it is
// read back in sequence, the next save follows it, and a torn lazy record leaves the state before.
TEST(AgentStateJournal, LazyRecordIsReplayedInSequence) {
  TempDir t;
  FileStateStore store(t / "state");
  AgentState s = sample();
  ASSERT_TRUE(store.save(s).ok());  // the first save: a snapshot
  s.active->phase = phase::kSwapping;
  ASSERT_TRUE(store.save(s).ok());  // a record
  const std::string swapping = serialize_state(s);
  s.active->phase = phase::kVerifying;
  ASSERT_TRUE(store.save_lazy(s).ok());
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(s));
  const auto with_lazy = *fs::read_file(store.journal_path());
  s.add_result(result(9));
  s.active.reset();
  ASSERT_TRUE(store.save(s).ok());
  EXPECT_EQ(store.snapshots(), 1) << "the lazy record is a record, not a snapshot";
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(s));
  // A crash that tore the lazy record (so the save after it never returned): the swapping
  // state holds. The lazy record starts the last 4 KiB block that is not zeros in `with_lazy`.
  size_t lazy_at = 0;
  for (size_t off = 4096; off + 8 <= with_lazy.size(); off += 4096)
    if (with_lazy.compare(off, 8, std::string(8, '\0')) != 0) lazy_at = off;
  ASSERT_EQ(lazy_at, 2 * 4096u) << "magic, the swapping record, then the lazy one";
  int fd = ::open(store.journal_path().c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const std::string torn(16, '\0');
  ASSERT_EQ(::pwrite(fd, torn.data(), torn.size(), static_cast<off_t>(lazy_at + 20)),
            static_cast<ssize_t>(torn.size()));
  ::close(fd);
  EXPECT_EQ(loaded_text(t / "state"), swapping);
}

// Each record carries only the results added since the previous one; replaying them keeps the
// last kMaxResults in the same order as in memory, with replaced results moved to the end.
TEST(AgentStateJournal, ResultsAreJournaledAsTheyAreAdded) {
  TempDir t;
  FileStateStore store(t / "state", 1 << 20);
  AgentState s;
  ASSERT_TRUE(store.save(s).ok());
  for (int i = 0; i < 300; ++i) {
    s.add_result(result(i));
    if (i % 7 == 0) s.add_result(result(i / 2));  // again: moves to the end
    if (i % 2 == 0) {
      ASSERT_TRUE(store.save(s).ok());
    }
  }
  ASSERT_TRUE(store.save(s).ok());
  EXPECT_EQ(store.snapshots(), 1);
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(s));
}

// A crash in the middle of a record: the torn record is ignored, the one before it holds.
TEST(AgentStateJournal, TornTailIsIgnored) {
  TempDir t;
  FileStateStore store(t / "state");
  AgentState s = sample();
  ASSERT_TRUE(store.save(s).ok());
  s.active->phase = phase::kSwapping;
  ASSERT_TRUE(store.save(s).ok());
  const std::string expected = serialize_state(s);
  const auto before = *fs::read_file(store.journal_path());
  s.active->phase = phase::kRestarting;
  ASSERT_TRUE(store.save(s).ok());
  const auto after = *fs::read_file(store.journal_path());
  // Where the last record starts: the first byte that changed.
  size_t at = 0;
  while (at < before.size() && before[at] == after[at]) ++at;
  ASSERT_LT(at, before.size());
  auto write_at = [&](size_t off, const std::string& bytes) {
    int fd = ::open(store.journal_path().c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  };
  // Only part of its payload reached the disk (the rest is still zeros).
  write_at(at + 20, std::string(after.size() - at - 20, '\0'));
  EXPECT_EQ(loaded_text(t / "state"), expected);
  // A flipped byte in the payload: the CRC catches it.
  write_at(0, after);
  write_at(at + 30, std::string(1, static_cast<char>(after[at + 30] ^ 0x20)));
  EXPECT_EQ(loaded_text(t / "state"), expected);
  // An absurd length.
  write_at(0, after);
  write_at(at, std::string("\xff\xff\xff\x7f", 4));
  EXPECT_EQ(loaded_text(t / "state"), expected);
  // Intact again: the last record counts.
  write_at(0, after);
  EXPECT_NE(loaded_text(t / "state"), expected);
}

// The journal fills up and starts over behind a new snapshot; the records of the previous
// round that are still in the file (behind the new, shorter ones) are never replayed.
TEST(AgentStateJournal, CompactsWhenFullAndIgnoresOlderRecords) {
  TempDir t;
  FileStateStore store(t / "state", 4096);
  AgentState s = sample();
  for (int i = 0; i < 60; ++i) {
    s.add_result(result(i));
    s.active->phase = i % 2 ? phase::kSwapping : phase::kVerifying;
    if (i % 5 == 0) s.active->failure = std::string(static_cast<size_t>(i) * 10, 'x');  // records of varying size
    ASSERT_TRUE(store.save(s).ok()) << i;
    ASSERT_EQ(loaded_text(t / "state"), serialize_state(s)) << "after save " << i;
  }
  EXPECT_GT(store.snapshots(), 2);
}

TEST(AgentStateJournal, MaintainCompactsOnceHalfFull) {
  TempDir t;
  FileStateStore store(t / "state", 64 * 1024);
  AgentState s = sample();
  ASSERT_TRUE(store.save(s).ok());
  store.maintain(s);
  EXPECT_EQ(store.snapshots(), 1) << "journal nearly empty: nothing to do";
  for (int i = 0; i < 8; ++i) {
    s.add_result(result(i));
    ASSERT_TRUE(store.save(s).ok());
  }
  ASSERT_EQ(store.snapshots(), 1);
  store.maintain(s);
  EXPECT_EQ(store.snapshots(), 2);
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(s));
}

// A store that saves before it loads (a new process) still outranks what the journal holds.
TEST(AgentStateJournal, FirstSaveOutranksTheOldJournal) {
  TempDir t;
  AgentState s = sample();
  {
    FileStateStore a(t / "state");
    for (int i = 0; i < 5; ++i) {
      s.add_result(result(i));
      ASSERT_TRUE(a.save(s).ok());
    }
  }
  AgentState other;
  other.services["api"] = {"v9", ""};
  FileStateStore b(t / "state");
  ASSERT_TRUE(b.save(other).ok());
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(other));
  other.add_result(result(77));
  ASSERT_TRUE(b.save(other).ok());
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(other));
}

// The previous format: agent-state.json alone, schema 1, no seq. It loads as it is, and the
// first save turns it into snapshot + journal.
TEST(AgentStateJournal, ReadsTheSchema1FileOfThePreviousVersion) {
  TempDir t;
  std::filesystem::create_directories(t / "state");
  const std::string v1 = R"({
  "active": {
    "failure": "",
    "from_version": "v2",
    "order": {
      "healthy_deadline_ms": 9000,
      "kind": "update",
      "min_healthy_ms": 500,
      "order_id": "o-3",
      "rollout_id": 7,
      "service": "web",
      "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "size": 1234,
      "version": "v3"
    },
    "phase": "swapping",
    "started_wall_ms": 1700000000000,
    "timings_ms": {
      "fetch": 0,
      "stage": 0
    }
  },
  "queue": [],
  "results": [
    {
      "message": "ok",
      "order_id": "o-2",
      "outcome": "succeeded",
      "rollout_id": 7,
      "running_version": "v2",
      "service": "web",
      "timings_ms": {
        "total": 42
      }
    }
  ],
  "schema": 1,
  "services": {
    "web": {
      "current": "v2",
      "previous": "v1"
    }
  }
}
)";
  write_text(t / "state/agent-state.json", v1, 0600);
  FileStateStore store(t / "state");
  auto s = store.load();
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_TRUE(s->active.has_value());
  EXPECT_EQ(s->active->phase, "swapping");
  EXPECT_EQ(s->active->from_version, "v2");
  EXPECT_EQ(s->services.at("web").previous, "v1");
  ASSERT_NE(s->find_result("o-2"), nullptr);
  EXPECT_EQ(s->find_result("o-2")->timings_ms.at("total"), 42u);
  ASSERT_TRUE(store.save(*s).ok());
  s->active->phase = phase::kVerifying;
  ASSERT_TRUE(store.save(*s).ok());
  EXPECT_TRUE(std::filesystem::exists(store.journal_path()));
  EXPECT_EQ(loaded_text(t / "state"), serialize_state(*s));
  EXPECT_NE(fs::read_file(store.path())->find("\"schema\": 2"), std::string::npos);
  EXPECT_FALSE(parse_state(std::string(v1).replace(v1.find("\"schema\": 1"), 11, "\"schema\": 3")).ok())
      << "a newer schema is refused";
}

TEST(AgentStateJournal, ForeignJournalFileIsCorrupt) {
  TempDir t;
  FileStateStore store(t / "state");
  ASSERT_TRUE(store.save(sample()).ok());
  write_text(store.journal_path(), "not a journal at all", 0600);
  FileStateStore fresh(t / "state");
  auto s = fresh.load();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, "corrupt");
}

// Issue 20, finding 2: a probe's or an archive's bytes in a result message must never make the
// journal unwritable (the agent would crash mid-order and again after every restart).
TEST(AgentState, AResultMessageThatIsNotUtf8StillSerializes) {
  AgentState s = sample();
  s.add_result({"o-9", 7, "web", "failed_reverted", "v2", "http://127.0.0.1:1/ returned \xff\xfe\x01", {}});
  std::string text;
  ASSERT_NO_THROW(text = serialize_state(s));
  auto back = parse_state(text);
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_NE(back->find_result("o-9"), nullptr);
  EXPECT_EQ(back->find_result("o-9")->outcome, "failed_reverted");
}

TEST(AgentState, TheJournalTakesAResultMessageThatIsNotUtf8) {
  TempDir t;
  FileStateStore store(t / "state");
  AgentState s = sample();
  ASSERT_TRUE(store.save(s).ok());
  s.add_result({"o-10", 8, "web", "failed", "v2", std::string("archive entry '\xc0\xaf' refused"), {}});
  ASSERT_TRUE(store.save_lazy(s).ok());
  ASSERT_TRUE(store.save(s).ok());
  FileStateStore reopened(t / "state");
  auto back = reopened.load();
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_NE(back->find_result("o-10"), nullptr);
}

// The highest coordinator epoch survives a restart, in the snapshot and in the records after
// it; a journal written before epochs existed (no "epoch" key) loads as 0, and a bad value is
// a corrupt journal.
TEST(AgentStateJournal, TheHighestEpochIsJournaled) {
  TempDir t;
  {
    FileStateStore store(t / "state");
    ASSERT_TRUE(store.load().ok());
    AgentState s = sample();
    EXPECT_EQ(serialize_state(s).find("\"epoch\""), std::string::npos) << "no epoch seen: not written";
    ASSERT_TRUE(store.save(s).ok());  // the snapshot: no epoch
    s.highest_epoch = 41;
    ASSERT_TRUE(store.save(s).ok());  // a record
    s.highest_epoch = 42;
    ASSERT_TRUE(store.save_lazy(s).ok());
    s.active.reset();
    ASSERT_TRUE(store.save(s).ok());
  }
  FileStateStore again(t / "state");
  auto back = again.load();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->highest_epoch, 42u);
  auto old = parse_state(*fs::read_file(again.path()));
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->highest_epoch, 0u) << "the snapshot was taken before any epoch";
  AgentState s = sample();
  s.highest_epoch = 7;
  auto text = serialize_state(s);
  EXPECT_EQ(parse_state(text)->highest_epoch, 7u);
  for (const std::string bad : {"-1", "\"7\"", "1.5", "null"}) {
    std::string t2 = text;
    t2.replace(t2.find("\"epoch\": 7") + 9, 1, bad);
    EXPECT_FALSE(parse_state(t2).ok()) << t2;
  }
}
