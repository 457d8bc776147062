// The order engine end to end against real dirs, real tar archives and a real shell restart
// command; only the coordinator is simulated (it answers FetchChunk from memory).
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include "agent/core/agent.h"
#include "agent/driver/binary_driver.h"
#include "agent_test_util.h"
#include "common/util/fs.h"
#include "common/util/sha256.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

// Healthy iff the file the restart command wrote says "ok": the release's own `health`
// file decides, copied there by a real shell restart command.
class HealthFileProbe : public Probe {
 public:
  explicit HealthFileProbe(std::string path) : path_(std::move(path)) {}
  std::string describe() const override { return path_; }
  Status check(Millis) override {
    auto t = fs::read_file(path_);
    if (t && *t == "ok\n") return Status::Ok();
    return make_error("probe", path_ + " says " + (t ? *t : std::string("nothing")));
  }

 private:
  std::string path_;
};

// The real binary driver whose next fsyncs making a switch durable can be made to fail (EIO).
class SyncFailingDriver final : public Driver {
 public:
  SyncFailingDriver(std::shared_ptr<BinaryDriver> d, int& failures) : d_(std::move(d)), failures_(failures) {}
  Expected<std::string> current_version() override { return d_->current_version(); }
  bool has_release(const ReleaseId& r) override { return d_->has_release(r); }
  Status check_installable(const ReleaseId& r) override { return d_->check_installable(r); }
  std::string partial_artifact_path(const std::string& sha) override { return d_->partial_artifact_path(sha); }
  std::string artifact_path(const std::string& sha) override { return d_->artifact_path(sha); }
  Status finish_download(const ReleaseId& r, const std::string& h) override { return d_->finish_download(r, h); }
  Status stage(const ReleaseId& r) override { return d_->stage(r); }
  Status switch_current(const std::string& v) override { return d_->switch_current(v); }
  Status sync_current() override {
    if (failures_ > 0) {
      --failures_;
      return make_error("io", "fsync root: Input/output error");
    }
    return d_->sync_current();
  }
  Status restart(const std::string& v) override { return d_->restart(v); }
  Status prune(uint32_t retain, const std::set<std::string>& keep) override { return d_->prune(retain, keep); }
  Status cleanup() override { return d_->cleanup(); }

 private:
  std::shared_ptr<BinaryDriver> d_;
  int& failures_;
};

struct Artifact {
  std::string bytes;
  std::string sha;
};

class EngineTest : public ::testing::Test {
 protected:
  TempDir t;
  SystemClock clock;
  RealProcessRunner runner;
  MemoryStateStore store;
  ServiceConfig cfg;
  std::map<std::string, Artifact> artifacts;  // by sha
  std::vector<proto::Message> sent;
  size_t scanned = 0;
  bool serve_chunks = true;
  int swap_sync_failures = 0;  // the next N fsyncs of `current` fail, with make_agent(/*sync_failing=*/true)
  std::unique_ptr<Agent> agent;

  void SetUp() override {
    cfg.name = "web";
    cfg.root = t / "root";
    cfg.restart_command =
        "cp \"$GANTRY_RELEASE_DIR/health\" \"$GANTRY_ROOT/health\" && echo $GANTRY_VERSION >> "
        "\"$GANTRY_ROOT/restarts\"";
    cfg.restart_timeout_ms = 5000;
    cfg.probe_interval_ms = 20;
    cfg.min_healthy_ms = 60;
    cfg.healthy_deadline_ms = 400;
    cfg.retain = 3;
    std::filesystem::create_directories(cfg.root + "/releases");
  }

  void make_agent(bool sync_failing = false) {
    agent.reset();
    std::map<std::string, ServiceRuntime> svcs;
    ServiceRuntime rt;
    rt.config = cfg;
    rt.driver = std::make_shared<BinaryDriver>(cfg, runner, clock);
    if (sync_failing)
      rt.driver =
          std::make_shared<SyncFailingDriver>(std::make_shared<BinaryDriver>(cfg, runner, clock), swap_sync_failures);
    rt.probes.push_back(std::make_shared<HealthFileProbe>(cfg.root + "/health"));
    svcs.emplace("web", std::move(rt));
    agent = std::make_unique<Agent>(
        "host-1", std::map<std::string, std::string>{{"zone", "eu-1"}}, std::move(svcs), store, clock,
        [this](const proto::Message& m) { sent.push_back(m); },
        [](Millis ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
    ASSERT_TRUE(agent->start().ok());
  }

  proto::Order order(const std::string& id, const std::string& version, bool healthy = true, uint64_t rollout = 1) {
    std::string src = t / ("src-" + version);
    if (!fs::exists(src)) {
      write_text(src + "/bin/app", "#!/bin/sh\necho " + version + "\n", 0755);
      write_text(src + "/health", healthy ? "ok\n" : "broken\n");
    }
    std::string bytes = make_tar(src, t / (version + ".tar"));
    Artifact a{bytes, sha256_hex(bytes)};
    artifacts[a.sha] = a;
    return proto::Order{id, rollout, "web", "update", version, a.sha, bytes.size(), 0, 0, "", ""};
  }

  // Plays the coordinator: answers chunk requests, until `id` has a report (or 10 s).
  std::optional<proto::Report> run_until_report(const std::string& id) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      for (; scanned < sent.size(); ++scanned) {
        proto::Message m = sent[scanned];
        if (auto* r = std::get_if<proto::Report>(&m); r && r->order_id == id) {
          ++scanned;
          return *r;
        }
        if (auto* f = std::get_if<proto::FetchChunk>(&m); f && serve_chunks) {
          auto it = artifacts.find(f->sha256);
          if (it == artifacts.end()) {
            agent->handle(proto::ErrorMsg{"not_found", "no such artifact",
                                          static_cast<uint16_t>(proto::MsgType::kFetchChunk), f->sha256});
            continue;
          }
          const std::string& b = it->second.bytes;
          agent->handle(proto::Chunk{f->sha256, f->offset, b.size(), b.substr(f->offset, f->length)});
        }
      }
      agent->tick();
      if (scanned == sent.size()) agent->wait_for_worker(20);
    }
    return std::nullopt;
  }

  // Runs until order `id` reports, and checks the report: its outcome, how its message starts,
  // and that the host runs `running` (the report says so and `current` points there).
  std::optional<proto::Report> expect_report(const std::string& id, const std::string& outcome,
                                             const std::string& message_start, const std::string& running) {
    auto r = run_until_report(id);
    EXPECT_TRUE(r) << "no report for " << id;
    if (!r) return r;
    EXPECT_EQ(r->outcome, outcome) << r->message;
    EXPECT_EQ(r->message.rfind(message_start, 0), 0u) << r->message;
    EXPECT_EQ(r->running_version, running);
    EXPECT_EQ(current(), "releases/" + running);
    return r;
  }

  template <typename T>
  std::vector<T> all_sent() const {
    std::vector<T> out;
    for (const auto& m : sent)
      if (auto* x = std::get_if<T>(&m)) out.push_back(*x);
    return out;
  }

  std::string current() {
    return fs::read_symlink(cfg.root + "/current").ok() ? *fs::read_symlink(cfg.root + "/current") : "";
  }
  std::string restarts() { return read_text(cfg.root + "/restarts"); }
};

}  // namespace

TEST_F(EngineTest, UpdateFetchesStagesSwapsVerifiesAndReports) {
  make_agent();
  auto o = order("o-1", "v1");
  agent->handle(o);
  auto r = run_until_report("o-1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded") << r->message;
  EXPECT_EQ(r->running_version, "v1");
  for (const char* k : {"fetch", "stage", "swap", "restart", "verify", "total"})
    EXPECT_TRUE(r->timings_ms.count(k)) << k;
  EXPECT_EQ(current(), "releases/v1");
  EXPECT_EQ(all_sent<proto::OrderAck>().at(0).status, "accepted");
  std::vector<std::string> phases;
  for (const auto& p : all_sent<proto::Progress>()) phases.push_back(p.phase);
  EXPECT_EQ(phases, (std::vector<std::string>{"fetching", "staging", "swapping", "restarting", "verifying"}));
  EXPECT_FALSE(fs::exists(cfg.root + "/downloads/" + o.sha256 + ".tar"));
  auto h = agent->hello();
  ASSERT_EQ(h.services.size(), 1u);
  EXPECT_EQ(h.services[0].current_version, "v1");
  EXPECT_EQ(h.services[0].state, "idle");
  EXPECT_EQ(h.labels.at("zone"), "eu-1");
}

TEST_F(EngineTest, BadReleaseIsRevertedToThePreviousOne) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  agent->handle(order("o-2", "v2", /*healthy=*/false));
  auto r = expect_report("o-2", "failed_reverted", "verification failed: ", "v1");
  ASSERT_TRUE(r);
  EXPECT_NE(r->message.find("reverted to v1"), std::string::npos) << r->message;
  EXPECT_EQ(restarts(), "v1\nv2\nv1\n");
  EXPECT_EQ(agent->hello().services[0].current_version, "v1");
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v2")) << "kept for inspection until pruned";
}

TEST_F(EngineTest, RestartFailureCountsAsVerificationFailure) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  cfg.restart_command =
      "if [ \"$GANTRY_VERSION\" = v2 ]; then exit 4; fi; cp \"$GANTRY_RELEASE_DIR/health\" \"$GANTRY_ROOT/health\"";
  make_agent();
  agent->handle(order("o-2", "v2"));
  expect_report("o-2", "failed_reverted", "restart command exited with 4", "v1");
}

TEST_F(EngineTest, FirstInstallThatFailsHasNothingToRevertTo) {
  make_agent();
  agent->handle(order("o-1", "v1", false));
  auto r = run_until_report("o-1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed");
  EXPECT_NE(r->message.find("no previous release"), std::string::npos);
}

TEST_F(EngineTest, DuplicateOrdersNeverRunTwice) {
  make_agent();
  auto o = order("o-1", "v1");
  agent->handle(o);
  agent->handle(o);  // while queued / in progress
  auto acks = all_sent<proto::OrderAck>();
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[1].status, "duplicate");
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  sent.clear();
  scanned = 0;
  agent->handle(o);  // after it finished: the stored report again
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(std::get<proto::OrderAck>(sent[0]).status, "duplicate");
  EXPECT_EQ(std::get<proto::Report>(sent[1]).outcome, "succeeded");
  agent->tick();
  EXPECT_EQ(restarts(), "v1\n") << "ran once";
  // The stored results survive an agent restart.
  make_agent();
  sent.clear();
  agent->handle(o);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(std::get<proto::Report>(sent[1]).order_id, "o-1");
}

TEST_F(EngineTest, UnknownServiceIsRejected) {
  make_agent();
  auto o = order("o-1", "v1");
  o.service = "db";
  agent->handle(o);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(std::get<proto::OrderAck>(sent[0]).status, "rejected");
  auto r = std::get<proto::Report>(sent[1]);
  EXPECT_EQ(r.outcome, "failed");
  EXPECT_EQ(r.message, "service db is not configured on this host");
}

TEST_F(EngineTest, DigestMismatchFailsAndKeepsTheHostAsItWas) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  auto o = order("o-2", "v2");
  artifacts[o.sha256].bytes[600] ^= 1;  // corrupted in transit
  agent->handle(o);
  expect_report("o-2", "failed", "digest mismatch", "v1");
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v2"));
  EXPECT_FALSE(fs::exists(cfg.root + "/downloads/" + o.sha256 + ".part"));
}

TEST_F(EngineTest, CoordinatorWithoutTheArtifactFailsTheOrder) {
  make_agent();
  auto o = order("o-1", "v1");
  artifacts.erase(o.sha256);
  agent->handle(o);
  auto r = run_until_report("o-1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed");
  EXPECT_NE(r->message.find("not_found"), std::string::npos) << r->message;
}

// Issue 20, finding 8: failed downloads never pile up in downloads/. What other orders left (a
// stalled fetch's partial file, a checked artifact never staged) goes when an order begins; a
// refused archive goes when its order fails; only a partial download stays, for a resume.
TEST_F(EngineTest, DownloadsKeepOnlyTheReleaseBeingInstalled) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  const std::string downloads = cfg.root + "/downloads/";
  write_text(downloads + std::string(64, 'a') + ".part", std::string(4096, 'x'));  // a fetch that stalled
  write_text(downloads + std::string(64, 'b') + ".tar", std::string(4096, 'y'));   // never staged
  auto names = [&] {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(downloads)) out.insert(e.path().filename().string());
    return out;
  };

  // A signed-for digest whose archive the extractor refuses: the order fails, nothing stays.
  std::string bad = tar_header("../evil", '0', 1) + tar_data("x") + tar_end();
  const std::string bad_sha = sha256_hex(bad);
  artifacts[bad_sha] = Artifact{bad, bad_sha};
  agent->handle(proto::Order{"o-2", 1, "web", "update", "v2", bad_sha, bad.size(), 0, 0, "", ""});
  expect_report("o-2", "failed", "", "v1");
  EXPECT_EQ(names(), std::set<std::string>{}) << "downloads/ kept files of failed or other orders";

  // The coordinator cannot serve the artifact: at most that release's partial file stays.
  auto o = order("o-3", "v3");
  artifacts.erase(o.sha256);
  agent->handle(o);
  expect_report("o-3", "failed", "", "v1");
  for (const auto& n : names()) EXPECT_EQ(n, o.sha256 + ".part");
}

TEST_F(EngineTest, RetentionPrunesOldReleasesButKeepsCurrentAndPrevious) {
  cfg.retain = 2;
  make_agent();
  for (int i = 1; i <= 4; ++i) {
    std::string id = "o-" + std::to_string(i);
    agent->handle(order(id, "v" + std::to_string(i)));
    ASSERT_EQ(run_until_report(id)->outcome, "succeeded");
  }
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v4"));
  EXPECT_TRUE(fs::exists(cfg.root + "/releases/v3"));
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v2"));
  EXPECT_FALSE(fs::exists(cfg.root + "/releases/v1"));
  EXPECT_EQ(agent->hello().services[0].previous_version, "v3");
  // A rollback to the retained previous release needs no download.
  auto back = order("o-5", "v3");
  back.kind = "rollback";
  size_t fetches_before = all_sent<proto::FetchChunk>().size();
  agent->handle(back);
  auto r = run_until_report("o-5");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded");
  EXPECT_EQ(all_sent<proto::FetchChunk>().size(), fetches_before);
  EXPECT_EQ(current(), "releases/v3");
  EXPECT_EQ(agent->hello().services[0].previous_version, "v4");
}

TEST_F(EngineTest, SignalCancelsQueuedOrdersOfThatRollout) {
  make_agent();
  agent->handle(order("o-1", "v1", true, 7));
  agent->handle(order("o-2", "v2", true, 7));
  agent->handle(order("o-3", "v3", true, 8));
  agent->handle(proto::Signal{"abort", 7, "web"});
  auto cancelled = all_sent<proto::Report>();
  ASSERT_EQ(cancelled.size(), 1u);
  EXPECT_EQ(cancelled[0].order_id, "o-2");
  EXPECT_EQ(cancelled[0].message, "cancelled by abort signal");
  EXPECT_EQ(run_until_report("o-1")->outcome, "succeeded") << "the running order is not touched";
  EXPECT_EQ(run_until_report("o-3")->outcome, "succeeded");
}

// An update order of a rollout whose stop signal this agent already heard (it was on the wire
// when the coordinator decided to stop) is refused: the host does not start the release after
// the decision. Rollback orders of that rollout, and other rollouts' updates, still run.
TEST_F(EngineTest, AnUpdateOfARolloutWhoseStopSignalWasHeardIsRefused) {
  make_agent();
  agent->handle(proto::Signal{"rollback", 7, "web"});
  agent->handle(order("o-1", "v1", true, 7));
  auto acks = all_sent<proto::OrderAck>();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].status, "rejected");
  auto reports = all_sent<proto::Report>();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, "failed");
  EXPECT_EQ(reports[0].message, "refused: rollout 7 of web was stopped (rollback signal) before this order arrived");
  agent->tick();
  EXPECT_EQ(restarts(), "") << "nothing was installed";
  // A repeat gets the stored answer, not a run.
  sent.clear();
  agent->handle(order("o-1", "v1", true, 7));
  EXPECT_EQ(std::get<proto::OrderAck>(sent.at(0)).status, "duplicate");
  proto::Order back = order("o-2", "v1", true, 7);
  back.kind = "rollback";
  agent->handle(back);
  EXPECT_EQ(run_until_report("o-2")->outcome, "succeeded") << "rollback orders of the rollout still run";
  agent->handle(proto::Signal{"abort", 9, "web"});
  agent->handle(order("o-3", "v2", true, 8));
  EXPECT_EQ(run_until_report("o-3")->outcome, "succeeded") << "another rollout is not affected";
}

TEST_F(EngineTest, JournalWriteFailureIsReportedAndTheHostKeepsRunning) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  // The write that would accept the order fails (disk full).
  store.fail_next(1, make_error("disk_full", "write agent-state.json: No space left on device"));
  agent->handle(order("o-2", "v2"));
  auto ack = all_sent<proto::OrderAck>().back();
  EXPECT_EQ(ack.status, "rejected");
  expect_report("o-2", "failed", "state write failed:", "v1");
}

TEST_F(EngineTest, JournalFailureAfterTheSwapRevertsToTheOldRelease) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  agent->handle(order("o-2", "v2"));
  // While staging, arrange for the write after the swap (before restarting) to fail.
  for (int i = 0; i < 500 && current() != "releases/v2"; ++i) {
    for (; scanned < sent.size(); ++scanned)
      if (auto* f = std::get_if<proto::FetchChunk>(&sent[scanned])) {
        const auto& b = artifacts[f->sha256].bytes;
        agent->handle(proto::Chunk{f->sha256, f->offset, b.size(), b.substr(f->offset, f->length)});
      }
    if (agent->state().active && agent->state().active->phase == phase::kStaging) {
      store.fail_next(1, make_error("io", "fsync agent-state.json: Input/output error"), /*after=*/1);
      agent->wait_for_worker(2000);
      agent->tick();
      break;
    }
    agent->tick();
    agent->wait_for_worker(10);
  }
  expect_report("o-2", "failed_reverted", "state write failed:", "v1");
}

// The swap's rename is made durable (fsync of the root) while the restart command runs; when
// that fsync fails, the order reverts once the job ends and records no success.
TEST_F(EngineTest, SwapThatCannotBeMadeDurableIsReverted) {
  make_agent(/*sync_failing=*/true);
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  swap_sync_failures = 1;  // the swap's; the revert's succeeds
  agent->handle(order("o-2", "v2"));
  expect_report("o-2", "failed_reverted", "swap failed: fsync root: Input/output error", "v1");
  EXPECT_EQ(swap_sync_failures, 0) << "the swap's fsync was the one that failed";
  EXPECT_EQ(restarts(), "v1\nv2\nv1\n") << "v2 was restarted (the command overlaps the fsync), then v1 again";
  EXPECT_EQ(agent->hello().services[0].current_version, "v1");
}

// Idle, and the release is already installed: one journal record accepts the order and is its
// swapping record (from_version), then restart, verify and the result: three writes in all.
TEST_F(EngineTest, InstalledReleaseWhenIdleIsAcceptedAndSwappedWithOneWrite) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  agent->handle(order("o-2", "v2"));
  ASSERT_EQ(run_until_report("o-2")->outcome, "succeeded");
  const int before = store.saves();
  const int lazy_before = store.lazy_saves();
  const size_t sent_before = sent.size();
  agent->handle(order("o-3", "v1"));
  EXPECT_EQ(store.saves(), before + 1) << "accepted and swapped with one write";
  EXPECT_EQ(store.lazy_saves(), lazy_before) << "the record that guards the swap is durable before it";
  EXPECT_EQ(all_sent<proto::OrderAck>().back().status, "accepted");
  EXPECT_EQ(current(), "releases/v1") << "swapped at once";
  auto j = store.load();
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE(j->active.has_value()) << "the journal holds the order as active";
  EXPECT_EQ(j->active->order.order_id, "o-3");
  EXPECT_EQ(j->active->phase, phase::kSwapping);
  EXPECT_EQ(j->active->from_version, "v2") << "the version to revert to, written before the swap";
  EXPECT_TRUE(j->queue.empty());
  agent->handle(order("o-3", "v1"));
  EXPECT_EQ(all_sent<proto::OrderAck>().back().status, "duplicate");
  auto r = run_until_report("o-3");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded");
  EXPECT_EQ(r->timings_ms.at("fetch"), 0u);
  EXPECT_EQ(store.saves(), before + 3) << "accept+swapping, verifying, result";
  EXPECT_EQ(store.lazy_saves(), lazy_before + 1) << "the verifying record guards no act: no fdatasync of its own";
  EXPECT_EQ(agent->hello().services[0].previous_version, "v2");
  // Restart and verify ran as one worker job; the phases still reach the coordinator in order.
  std::vector<std::string> phases;
  for (size_t i = sent_before; i < sent.size(); ++i)
    if (auto* p = std::get_if<proto::Progress>(&sent[i]); p && p->order_id == "o-3") phases.push_back(p->phase);
  EXPECT_EQ(phases,
            (std::vector<std::string>{phase::kFetching, phase::kSwapping, phase::kRestarting, phase::kVerifying}));
  EXPECT_EQ(r->timings_ms.count("restart"), 1u);
  EXPECT_EQ(r->timings_ms.count("verify"), 1u);
}

TEST_F(EngineTest, InstalledReleaseWhoseAcceptWriteFailsIsRejectedUntouched) {
  make_agent();
  agent->handle(order("o-1", "v1"));
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  agent->handle(order("o-2", "v2"));
  ASSERT_EQ(run_until_report("o-2")->outcome, "succeeded");
  const std::string restarts = read_text(cfg.root + "/restarts");
  store.fail_next(1, make_error("disk_full", "write agent-state.journal: No space left on device"));
  agent->handle(order("o-3", "v1"));
  EXPECT_EQ(all_sent<proto::OrderAck>().back().status, "rejected");
  expect_report("o-3", "failed", "state write failed:", "v2");
  EXPECT_FALSE(agent->state().active.has_value());
  EXPECT_EQ(current(), "releases/v2");
  // Its restart command's shell was started before the write, and dropped: it ran nothing.
  EXPECT_EQ(read_text(cfg.root + "/restarts"), restarts);
}

// --- Recovery: a journal left by an agent killed mid-order -----------------------------------

class RecoveryTest : public EngineTest {
 protected:
  // Installs v1 (current) and stages v2 through a first agent, then leaves a journal
  // that says an order to v2 was interrupted in `ph`, with `current` as given.
  void interrupted(const char* ph, const std::string& current_version, bool v2_healthy = true) {
    make_agent();
    agent->handle(order("o-1", "v1"));
    ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
    auto o2 = order("o-2", "v2", v2_healthy);
    agent.reset();
    // Install v2's release dir as the staging step would have.
    BinaryDriver d(cfg, runner, clock);
    std::filesystem::create_directories(cfg.root + "/downloads");
    write_text(d.artifact_path(o2.sha256), artifacts[o2.sha256].bytes);
    ASSERT_TRUE(d.stage({"web", "v2", o2.sha256, o2.size}).ok());
    ASSERT_TRUE(d.activate(current_version).ok());
    auto st = store.load();
    ASSERT_TRUE(st.ok());
    ActiveOrder a;
    a.order = o2;
    a.phase = ph;
    a.from_version = "v1";
    a.failure = "verification failed: earlier";
    st->active = a;
    ASSERT_TRUE(store.save(*st).ok());
    sent.clear();
    scanned = 0;
    make_agent();
  }
};

TEST_F(RecoveryTest, AfterSwapFinishesTheUpdate) {
  interrupted(phase::kSwapping, "v2");
  EXPECT_EQ(agent->hello().services[0].state, "updating");
  EXPECT_EQ(agent->hello().services[0].order_id, "o-2");
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded");
  EXPECT_EQ(current(), "releases/v2");
}

TEST_F(RecoveryTest, BeforeSwapDoesTheSwap) {
  interrupted(phase::kSwapping, "v1");
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded");
  EXPECT_EQ(current(), "releases/v2");
}

TEST_F(RecoveryTest, DuringVerifyOfABadReleaseReverts) {
  interrupted(phase::kVerifying, "v2", /*healthy=*/false);
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed_reverted");
  EXPECT_EQ(r->running_version, "v1");
  EXPECT_EQ(current(), "releases/v1");
}

TEST_F(RecoveryTest, DuringRevertFinishesTheRevert) {
  interrupted(phase::kReverting, "v2", false);
  EXPECT_EQ(agent->hello().services[0].state, "reverting");
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "failed_reverted");
  EXPECT_EQ(r->message, "verification failed: earlier; reverted to v1");
  EXPECT_EQ(current(), "releases/v1");
}

TEST_F(RecoveryTest, DuringStagingStartsOverAndLeavesNoStagingBehind) {
  interrupted(phase::kStaging, "v1");
  auto r = run_until_report("o-2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "succeeded");
  EXPECT_EQ(current(), "releases/v2");
  EXPECT_TRUE(std::filesystem::is_empty(cfg.root + "/staging"));
}

TEST_F(EngineTest, RollbackSignalNeverCancelsRollbackOrders) {
  make_agent();
  agent->handle(order("o-1", "v1", true, 7));  // runs
  proto::Order up = order("o-2", "v2", true, 7);
  proto::Order back = order("o-3", "v1", true, 7);
  back.kind = "rollback";
  agent->handle(up);
  agent->handle(back);
  // The coordinator sends the rollback Signal right after the rollback orders of the same step.
  agent->handle(proto::Signal{"rollback", 7, "web"});
  auto reports = all_sent<proto::Report>();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].order_id, "o-2");
  EXPECT_EQ(reports[0].message, "cancelled by rollback signal");
  EXPECT_EQ(run_until_report("o-1")->outcome, "succeeded");
  EXPECT_EQ(run_until_report("o-3")->outcome, "succeeded") << "the rollback order must run";
}

#include <sodium.h>

#include "common/release/manifest.h"
#include "common/security/keys.h"

TEST_F(EngineTest, OnlyReleasesSignedByATrustedKeyInstall) {
  auto kp = *security::generate_signing_keypair();
  auto other = *security::generate_signing_keypair();
  make_agent();
  agent->set_release_keys({kp.public_key});
  auto signed_order = [&](proto::Order o, const std::string& service, const std::string& secret) {
    release::Manifest m{service, o.version, o.sha256, o.size, "2024-01-01T00:00:00Z"};
    o.manifest = m.to_bytes();
    o.signature = release::sign(o.manifest, secret);
    return o;
  };
  agent->handle(order("o-1", "v1"));  // unsigned
  auto r1 = run_until_report("o-1");
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->outcome, "failed");
  EXPECT_NE(r1->message.find("not signed"), std::string::npos) << r1->message;
  agent->handle(signed_order(order("o-2", "v1"), "web", other.secret_key));
  EXPECT_NE(run_until_report("o-2")->message.find("does not verify"), std::string::npos);
  agent->handle(signed_order(order("o-3", "v1"), "db", kp.secret_key));
  EXPECT_NE(run_until_report("o-3")->message.find("for service 'db'"), std::string::npos);
  proto::Order lying = signed_order(order("o-4", "v1"), "web", kp.secret_key);
  lying.size += 1;  // the coordinator claims a bigger artifact than was signed
  agent->handle(lying);
  EXPECT_NE(run_until_report("o-4")->message.find("size"), std::string::npos);
  EXPECT_EQ(current(), "") << "nothing was installed";
  agent->handle(signed_order(order("o-5", "v1"), "web", kp.secret_key));
  auto ok = run_until_report("o-5");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->outcome, "succeeded") << ok->message;
  EXPECT_EQ(current(), "releases/v1");
}

// An order for a release whose signed manifest verified before skips the ed25519 check only for
// the very same manifest and signature bytes and the same trusted keys; every order is still
// matched against the manifest.
TEST_F(EngineTest, AVerifiedManifestIsTrustedAgainOnlyForTheSameBytesAndKeys) {
  auto kp = *security::generate_signing_keypair();
  auto other = *security::generate_signing_keypair();
  make_agent();
  agent->set_release_keys({kp.public_key});
  auto signed_order = [&](proto::Order o) {
    release::Manifest m{"web", o.version, o.sha256, o.size, "2024-01-01T00:00:00Z"};
    o.manifest = m.to_bytes();
    o.signature = release::sign(o.manifest, kp.secret_key);
    return o;
  };
  const proto::Order good = signed_order(order("o-1", "v1"));
  agent->handle(good);
  ASSERT_EQ(run_until_report("o-1")->outcome, "succeeded");
  auto again = [&](const std::string& id) {
    proto::Order o = good;
    o.order_id = id;
    return o;
  };
  proto::Order bad_sig = again("o-2");
  bad_sig.signature[0] = bad_sig.signature[0] == '0' ? '1' : '0';
  agent->handle(bad_sig);
  EXPECT_NE(run_until_report("o-2")->message.find("does not verify"), std::string::npos);
  proto::Order other_manifest = again("o-3");
  other_manifest.manifest = release::Manifest{"web", "v1", good.sha256, good.size, "2024-01-02T00:00:00Z"}.to_bytes();
  agent->handle(other_manifest);
  EXPECT_NE(run_until_report("o-3")->message.find("does not verify"), std::string::npos);
  proto::Order lying = again("o-4");
  lying.size += 1;
  agent->handle(lying);
  EXPECT_NE(run_until_report("o-4")->message.find("size"), std::string::npos);
  agent->handle(again("o-5"));
  EXPECT_EQ(run_until_report("o-5")->outcome, "succeeded");
  agent->set_release_keys({other.public_key});
  agent->handle(again("o-6"));
  EXPECT_NE(run_until_report("o-6")->message.find("does not verify"), std::string::npos)
      << "keys changed: checked again";
  EXPECT_EQ(current(), "releases/v1");
}

// Fencing (PROTOCOL.md "Epochs"): once an epoch was seen, an order of a lower one (a deposed
// coordinator's) is refused with nothing run and nothing recorded, so the leader's resend of the
// same order id still runs; a lower signal stops nothing; the highest epoch survives a restart.
TEST_F(EngineTest, OrdersAndSignalsOfALowerEpochAreRefused) {
  make_agent();
  proto::Order first = order("o-1", "v1");
  first.epoch = 0;
  agent->handle(first);
  EXPECT_EQ(all_sent<proto::OrderAck>().at(0).status, "accepted")
      << "epoch 0 while none was seen: an older coordinator";
  EXPECT_EQ(run_until_report("o-1")->outcome, "succeeded");
  EXPECT_TRUE(agent->observe_epoch(5, "welcome"));
  EXPECT_EQ(agent->state().highest_epoch, 5u);
  EXPECT_NE(store.text().find("\"epoch\": 5"), std::string::npos) << "journaled at once";
  sent.clear();
  scanned = 0;
  proto::Order stale = order("o-2", "v2", true, 2);
  stale.epoch = 3;
  agent->handle(stale);
  ASSERT_EQ(sent.size(), 1u) << "an OrderAck and nothing else: no Report, no FetchChunk";
  auto ack = std::get<proto::OrderAck>(sent[0]);
  EXPECT_EQ(ack.order_id, "o-2");
  EXPECT_EQ(ack.status, "rejected");
  EXPECT_EQ(ack.message, "stale epoch 3 < 5");
  EXPECT_EQ(agent->state().find_result("o-2"), nullptr) << "nothing recorded";
  stale.epoch = 0;
  sent.clear();
  scanned = 0;
  agent->handle(stale);
  EXPECT_EQ(std::get<proto::OrderAck>(sent.at(0)).message, "stale epoch 0 < 5") << "absent, once one was seen";
  EXPECT_FALSE(agent->working());
  // The leader's orders run; a stale abort of a queued order's rollout cancels nothing.
  proto::Order running = order("o-3", "v2", true, 3);
  running.epoch = 5;
  proto::Order queued = order("o-4", "v3", true, 4);
  queued.epoch = 5;
  agent->handle(running);
  agent->handle(queued);
  ASSERT_EQ(all_sent<proto::OrderAck>().size(), 3u);
  EXPECT_EQ(all_sent<proto::OrderAck>().at(2).status, "accepted");
  const size_t before = sent.size();
  agent->handle(proto::Signal{"abort", 4, "web", 4});
  for (size_t i = before; i < sent.size(); ++i)
    EXPECT_FALSE(std::holds_alternative<proto::Report>(sent[i])) << "a stale signal cancels nothing";
  // The refused order id, resent by a newer leader, runs.
  stale.epoch = 6;
  agent->handle(stale);
  EXPECT_EQ(agent->state().highest_epoch, 6u);
  for (const char* id : {"o-3", "o-4", "o-2"}) {
    auto r = run_until_report(id);
    ASSERT_TRUE(r) << id;
    EXPECT_EQ(r->outcome, "succeeded") << id << " (o-4: not cancelled by the stale abort; o-2: the leader's resend)";
  }
  // Restarted on the same journal: still 6, and 5 is refused.
  make_agent();
  EXPECT_EQ(agent->state().highest_epoch, 6u);
  sent.clear();
  scanned = 0;
  proto::Order late = order("o-5", "v1", true, 5);
  late.epoch = 5;
  agent->handle(late);
  EXPECT_EQ(std::get<proto::OrderAck>(sent.at(0)).message, "stale epoch 5 < 6");
  EXPECT_FALSE(agent->observe_epoch(5, "welcome"));
  EXPECT_TRUE(agent->observe_epoch(6, "welcome"));
}
