// Start-first for binary services: the slot logic (agent/driver/slots.h), its config keys and
// their errors, and the sequence's order and failure semantics (agent/core/start_first.h) with
// a recording slot driver, recording step commands and scripted probes: no processes, no sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "agent/config/agent_config.h"
#include "agent/core/start_first.h"
#include "agent/traffic/lifecycle.h"
#include "agent_test_util.h"

using namespace gantry;
using namespace gantry::agent;
using namespace gantry::agent::testing;

namespace {

// ---------------------------------------------------------------------------------------------
// Slots

TEST(Slots, ParseTwoNamedPorts) {
  auto s = parse_slots("a:8081 b:8082");
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[0].name, "a");
  EXPECT_EQ((*s)[0].port, 8081);
  EXPECT_EQ((*s)[1].name, "b");
  EXPECT_EQ((*s)[1].port, 8082);
  EXPECT_TRUE(parse_slots("  blue:1\tgreen-2:65535 ").ok());
}

TEST(Slots, RefuseAnythingButTwoDistinctSlots) {
  for (const char* bad :
       {"", "a:8081", "a:8081 b:8082 c:8083", "a:8081 a:8082", "a:8081 b:8081", "a:0 b:1", "a:65536 b:1", "a:80x b:81",
        "a b:81", "A:80 b:81", "a/b:80 c:81", ":80 b:81", "abcdefghijklmnopq:80 b:81", "a:-1 b:2"}) {
    auto s = parse_slots(bad);
    EXPECT_FALSE(s.ok()) << "'" << bad << "' parsed";
  }
  EXPECT_NE(parse_slots("a:8081 a:8082").error().message.find("twice"), std::string::npos);
  EXPECT_NE(parse_slots("a:8081 b:8081").error().message.find("two slots"), std::string::npos);
}

TEST(Slots, PlaceholdersAreFilledEverywhere) {
  Slot b{"b", 8082};
  EXPECT_EQ(with_slot("http://127.0.0.1:{port}/health?s={slot}&p={port}", b),
            "http://127.0.0.1:8082/health?s=b&p=8082");
  EXPECT_EQ(with_slot("web/web17-{slot}", b), "web/web17-b");
  EXPECT_EQ(with_slot("plain", b), "plain");
  EXPECT_TRUE(names_slot("x{port}"));
  EXPECT_TRUE(names_slot("{slot}"));
  EXPECT_FALSE(names_slot("{ports}"));
}

TEST(Slots, TheLiveSlotIsTheOneNamingCurrent) {
  const std::vector<Slot> slots = {{"a", 1}, {"b", 2}};
  EXPECT_EQ(choose_live_slot(slots, {{"", 0}, {"", 0}}, ""), "");
  EXPECT_EQ(choose_live_slot(slots, {{"v1", 5}, {"", 0}}, ""), "");  // nothing current
  EXPECT_EQ(choose_live_slot(slots, {{"v1", 5}, {"", 0}}, "v1"), "a");
  EXPECT_EQ(choose_live_slot(slots, {{"v1", 5}, {"v2", 9}}, "v1"), "a");
  EXPECT_EQ(choose_live_slot(slots, {{"v1", 5}, {"v2", 9}}, "v2"), "b");
  // The same release in both (an old instance that could not be stopped): the newer link.
  EXPECT_EQ(choose_live_slot(slots, {{"v2", 5}, {"v2", 9}}, "v2"), "b");
  EXPECT_EQ(choose_live_slot(slots, {{"v2", 9}, {"v2", 5}}, "v2"), "a");
  // Installed stop-first before (no slot names current): none.
  EXPECT_EQ(choose_live_slot(slots, {{"", 0}, {"", 0}}, "v1"), "");
  EXPECT_EQ(next_slot(slots, ""), "a");
  EXPECT_EQ(next_slot(slots, "a"), "b");
  EXPECT_EQ(next_slot(slots, "b"), "a");
  EXPECT_EQ(other_slot(slots, "a"), "b");
}

// ---------------------------------------------------------------------------------------------
// Config

Expected<ParsedArgs> parse(TempDir& t, const std::string& section) {
  std::string path = t / "a.ini";
  write_text(path, "host_id = h\n[service.web]\nroot = /srv/web\n" + section);
  std::vector<const char*> argv = {"gantry-agent", "--config", path.c_str()};
  return parse_args(static_cast<int>(argv.size()), argv.data());
}

std::string error_of(const Expected<ParsedArgs>& p) { return p.ok() ? std::string("(parsed)") : p.error().message; }

const std::string kStartFirst =
    "start_order = start-first\nslots = a:8081 b:8082\nstart_command = start $GANTRY_SLOT\n"
    "stop_command = stop $GANTRY_SLOT\nhttp_probe = http://127.0.0.1:{port}/health\n";

TEST(StartFirstConfig, AStartFirstBinaryServiceParses) {
  TempDir t;
  auto p = parse(t, kStartFirst +
                        "start_timeout_ms = 5000\nstop_timeout_ms = 7000\ntcp_probe = 127.0.0.1:{port}\n"
                        "tcp_probe = 127.0.0.1:5432\nhaproxy_socket = /run/haproxy.sock\n"
                        "haproxy_server = web/web17-{slot}\n");
  ASSERT_TRUE(p.ok()) << error_of(p);
  const auto& s = p->config.services.at("web");
  EXPECT_EQ(s.start_order, "start-first");
  ASSERT_EQ(s.slots.size(), 2u);
  EXPECT_EQ(s.slots[1].port, 8082);
  EXPECT_EQ(s.start_command, "start $GANTRY_SLOT");
  EXPECT_EQ(s.stop_command, "stop $GANTRY_SLOT");
  EXPECT_EQ(s.start_timeout_ms, 5000);
  EXPECT_EQ(s.stop_timeout_ms, 7000);
  EXPECT_EQ(s.http_probes.at(0), "http://127.0.0.1:{port}/health");
  EXPECT_EQ(s.traffic.haproxy.backend, "web");
  EXPECT_EQ(s.traffic.haproxy.server, "web17-{slot}");
}

TEST(StartFirstConfig, EachMissingOrWrongPieceIsNamed) {
  struct Case {
    std::string section, says;
  };
  const std::vector<Case> cases = {
      {"start_order = start-first\nstart_command = a\nstop_command = b\nhttp_probe = http://127.0.0.1:{port}/\n",
       "needs slots = NAME:PORT NAME:PORT"},
      {kStartFirst + "restart_command = systemctl restart web\n", "restart_command restarts the one instance"},
      {"start_order = start-first\nslots = a:1 b:2\nstop_command = b\nhttp_probe = http://127.0.0.1:{port}/\n",
       "needs start_command and stop_command"},
      {"start_order = start-first\nslots = a:1 b:2\nstart_command = a\nstop_command = b\n"
       "http_probe = http://127.0.0.1:8080/\n",
       "name the slot's port in a probe as {port}"},
      {kStartFirst + "haproxy_socket = /run/h.sock\nhaproxy_server = web/web17\n",
       "is one server for two instances: name each slot's server with {slot}"},
      {"restart_command = r\nhttp_probe = http://127.0.0.1:{port}/\n", "need start_order = start-first and slots"},
      {"restart_command = r\nslots = a:1 b:2\n", "need start_order = start-first"},
      {"restart_command = r\nstart_command = s\n", "need start_order = start-first"},
      {"restart_command = r\nhaproxy_socket = /run/h.sock\nhaproxy_server = web/w-{slot}\n",
       "need start_order = start-first"},
      {kStartFirst + "slots = a:1\n", "exactly two slots"},
      {"slots = a:1 a:2\n", "names slot 'a' twice"},
      {"start_command =\n", "must not be empty"},
      {"start_timeout_ms = 0\n", "start_timeout_ms must be an integer"},
      {"http_probe = http://127.0.0.1:{slot}/\n", "http_probe"},
      {"haproxy_server = web/{slot}/x\n", "BACKEND/SERVER"},
      {"driver = container\nslots = a:1 b:2\n", "are for driver = binary"},
      {"driver = container\nhttp_probe = http://127.0.0.1:{port}/\n", "{slot} and {port} name a slot"},
  };
  for (const auto& c : cases) {
    TempDir t;
    auto p = parse(t, c.section);
    EXPECT_NE(error_of(p).find(c.says), std::string::npos) << c.section << " -> " << error_of(p);
  }
}

// ---------------------------------------------------------------------------------------------
// The sequence

// Records every act; the acts named in `fail` fail.
class RecordingSlots final : public SlotDriver {
 public:
  std::vector<std::string>& log;
  std::set<std::string> fail;
  std::map<std::string, std::string> links;
  std::vector<Slot> slot_list = {{"a", 8081}, {"b", 8082}};
  explicit RecordingSlots(std::vector<std::string>& l) : log(l) {}
  const std::vector<Slot>& slots() const override { return slot_list; }
  Expected<std::string> live_slot() override { return std::string("a"); }
  Expected<std::string> slot_version(const std::string& n) override { return links.count(n) ? links[n] : ""; }
  Status act(const std::string& what) {
    log.push_back(what);
    if (fail.count(what)) return make_error("restart", what + " failed");
    return Status::Ok();
  }
  Status link_slot(const std::string& n, const std::string& v) override {
    Status st = act("link " + n + " " + v);
    if (st.ok()) links[n] = v;
    return st;
  }
  Status unlink_slot(const std::string& n) override {
    links.erase(n);
    return act("unlink " + n);
  }
  Status start_slot(const std::string& n, const std::string& v) override { return act("start " + n + " " + v); }
  Status stop_slot(const std::string& n, const std::string& v) override { return act("stop " + n + " " + v); }
};

// Step commands "block", "allow", ... recorded with the slot they ran for (GANTRY_SLOT).
class SlotRunner final : public ProcessRunner {
 public:
  std::vector<std::string>& log;
  std::set<std::string> fail;
  explicit SlotRunner(std::vector<std::string>& l) : log(l) {}
  Expected<ProcessResult> run_shell(const std::string& command, const std::map<std::string, std::string>& env,
                                    Millis) override {
    const std::string what = command + " " + env.at("GANTRY_SLOT") + ":" + env.at("GANTRY_SLOT_PORT");
    log.push_back(what);
    ProcessResult r;
    r.exit_code = fail.count(what) ? 1 : 0;
    return r;
  }
};

class StartFirstSequence : public ::testing::Test {
 protected:
  std::vector<std::string> log;
  RecordingSlots slots{log};
  SlotRunner runner{log};
  FakeClock clock;
  std::set<std::string> unhealthy;  // slots whose probes fail
  std::set<std::string> phases;
  std::vector<std::string> steps;
  std::unique_ptr<traffic::Lifecycle> lc;
  traffic::StepContext ctx;
  start_first::Acts acts;

  void SetUp() override {
    traffic::LifecycleSettings s;
    s.block_traffic.command = "block";
    s.allow_traffic.command = "allow";
    s.post_allow.command = "post_allow";
    lc = std::make_unique<traffic::Lifecycle>(s, runner, nullptr, clock, [this](Millis ms) { clock.advance(ms); });
    ctx.service = "web";
    ctx.order_id = "o1";
    ctx.kind = "update";
    ctx.from_version = "v1";
    ctx.to_version = "v2";
    slots.links["a"] = "v1";
    acts.slots = &slots;
    acts.promote = [this](const std::string& v) {
      log.push_back("promote " + v);
      return slots.fail.count("promote") ? Status(make_error("swap", "rename failed")) : Status::Ok();
    };
    acts.verify = [this](const std::string& slot) -> Status {
      log.push_back("verify " + slot);
      if (unhealthy.count(slot)) return make_error("unhealthy", "slot " + slot + " returned 500");
      return Status::Ok();
    };
    acts.verify_for = [this](const std::string& slot, Millis) { return acts.verify(slot); };
    acts.lifecycle = [this](const std::string&) { return lc.get(); };
  }

  traffic::StepObserver observer() {
    return [this](const std::string& p) { steps.push_back(p); };
  }
  Status update() { return start_first::update(ctx, "b", "a", acts, observer(), nullptr); }
  bool ran(const std::string& what) const { return std::find(log.begin(), log.end(), what) != log.end(); }
  std::string joined() const {
    std::string s;
    for (const auto& l : log) s += l + ", ";
    return s;
  }
};

TEST_F(StartFirstSequence, TheOldInstanceLeavesOnlyOnceTheNewOneIsVerifiedAndServing) {
  ASSERT_TRUE(update().ok());
  const std::vector<std::string> want = {"block b:8082", "link b v2",    "stop b v2",         "start b v2",
                                         "verify b",     "allow b:8082", "post_allow b:8082", "block a:8081",
                                         "promote v2",   "stop a v1",    "unlink a"};
  EXPECT_EQ(log, want) << joined();
  // Announced phases name the slot; the first block of the idle slot is not announced.
  const std::vector<std::string> want_steps = {"swapping|slot b (v2)",        "restarting|slot b (v2)",
                                               "verifying|slot b (v2)",       "allowing_traffic|slot b (v2)",
                                               "traffic_allowed|slot b (v2)", "verifying_traffic|slot b (v2)",
                                               "draining|slot a (v1)",        "waiting_inflight|slot a (v1)"};
  EXPECT_EQ(steps, want_steps);
}

TEST_F(StartFirstSequence, ABadReleaseIsNeverAllowedAndTheOldOneNeverTouched) {
  unhealthy.insert("b");
  Status st = update();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("slot b returned 500"), std::string::npos);
  EXPECT_FALSE(ran("allow b:8082")) << joined();
  for (const auto& l : log) EXPECT_EQ(l.find(" a"), std::string::npos) << "touched slot a: " << joined();
  EXPECT_FALSE(ran("promote v2"));
  // The engine then abandons the new instance: blocked, stopped, unlinked; a allowed again.
  log.clear();
  ASSERT_TRUE(start_first::abandon(ctx, "b", "a", acts).ok());
  const std::vector<std::string> want = {"allow a:8081", "block b:8082", "stop b v2", "unlink b"};
  EXPECT_EQ(log, want) << joined();
  EXPECT_EQ(slots.links.count("b"), 0u);
}

TEST_F(StartFirstSequence, FailuresBeforeThePromotionLeaveTheOldInstanceServing) {
  for (const std::string f :
       {"block b:8082", "link b v2", "start b v2", "allow b:8082", "post_allow b:8082", "block a:8081", "promote"}) {
    log.clear();
    slots.fail = {f};
    runner.fail = {f};
    slots.links = {{"a", "v1"}};
    Status st = update();
    EXPECT_FALSE(st.ok()) << f;
    EXPECT_NE(st.error().code, start_first::kStopOld) << f;
    EXPECT_FALSE(ran("stop a v1")) << f << ": " << joined();
    if (f == "promote") {
      EXPECT_TRUE(ran("block a:8081")) << joined();  // drained before the switch; abandon allows it back
    } else if (f != "block a:8081") {
      EXPECT_FALSE(ran("block a:8081")) << f << ": " << joined();
    } else {
      // The drain of the old slot failed: it is allowed back (Lifecycle::block), nothing promoted.
      EXPECT_TRUE(ran("allow a:8081")) << joined();
      EXPECT_FALSE(ran("promote v2")) << joined();
    }
    if (f == "block b:8082") {
      EXPECT_EQ(log.size(), 1u) << "went on after failing to block the new slot: " << joined();
    }
  }
}

TEST_F(StartFirstSequence, AnOldInstanceThatWillNotStopIsAFailureAfterThePromotion) {
  slots.fail = {"stop a v1"};
  Status st = update();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, start_first::kStopOld);
  EXPECT_TRUE(ran("promote v2"));
  EXPECT_FALSE(ran("unlink a")) << "the link of an instance that may still run was removed";
}

TEST_F(StartFirstSequence, ResumedAfterThePromotionItVerifiesWithoutRestartingAndRetiresTheOld) {
  slots.links["b"] = "v2";
  ASSERT_TRUE(start_first::resume_promoted(ctx, "b", "a", acts, observer(), nullptr).ok());
  const std::vector<std::string> want = {"verify b",     "allow b:8082", "post_allow b:8082",
                                         "block a:8081", "stop a v1",    "unlink a"};
  EXPECT_EQ(log, want) << joined();
}

TEST_F(StartFirstSequence, AFirstInstallAbandonedAllowsNoIdleSlot) {
  ctx.from_version = "";
  slots.links.clear();
  slots.links["a"] = "v2";  // the new release was linked into slot a; slot b never ran anything
  ASSERT_TRUE(start_first::abandon(ctx, "a", "b", acts).ok());
  EXPECT_FALSE(ran("allow b:8082")) << joined();
  EXPECT_TRUE(ran("stop a v2"));
}

TEST_F(StartFirstSequence, AbandonGoesOnPastFailuresAndNamesThem) {
  slots.fail = {"stop b v2"};
  runner.fail = {"block b:8082"};
  Status st = start_first::abandon(ctx, "b", "a", acts);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("blocking slot b"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("stopping slot b"), std::string::npos) << st.error().message;
  EXPECT_TRUE(ran("unlink b"));
  EXPECT_TRUE(ran("allow a:8081"));
}

}  // namespace
