// Epoch fencing with real processes (PROTOCOL.md §5.8): a real agent journals the highest
// coordinator epoch it has seen and refuses what a deposed coordinator sends. The coordinator
// (SQLite store) takes a higher epoch at every start; the deposed coordinator is played by a
// test-side ROUTER on the coordinator's own agent endpoint (tests/support/fake_router.h),
// speaking Gantry's codec.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/durability.h"
#include "tests/support/fake_router.h"
#include "tests/support/fleet.h"

namespace gantry::testing {
namespace {

uint64_t coordinator_epoch(Fleet& f) { return json_of(f.cli({"--json", "status"}, 10000)).value("epoch", 0ULL); }

uint64_t journaled_epoch(Fleet& f) { return agent_journal(f, 0).value("epoch", 0ULL); }

TEST(EpochFencing, ARealAgentRefusesOrdersAndWelcomesOfALowerEpoch) {
  FleetOptions o;
  o.insecure = true;  // the fake coordinator speaks plaintext
  Fleet f(1, o);
  ASSERT_TRUE(start_fleet(f)) << f.diagnostics();
  std::string why;
  ASSERT_TRUE(install_everywhere(f, "v1", &why)) << why << f.diagnostics();
  const uint64_t first = coordinator_epoch(f);
  ASSERT_GT(first, 0u);
  // Restarted, the coordinator's epoch goes up, and the agent journals it from the Welcome.
  f.restart_coordinator();
  const uint64_t second = coordinator_epoch(f);
  ASSERT_GT(second, first);
  ASSERT_TRUE(wait_until([&] { return journaled_epoch(f) == second; }, 20000, 100))
      << agent_journal(f, 0).dump() << f.diagnostics();

  // Idle (whatever the restarted coordinator still had for it is done), the coordinator dies; a
  // deposed one (epoch `first`) answers on its agent endpoint.
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = agent_journal(f, 0);
        return j.is_object() && j["active"].is_null() && j["queue"].empty();
      },
      20000, 100))
      << agent_journal(f, 0).dump();
  const std::string agent_ep = f.endpoints().agent;
  ASSERT_TRUE(f.kill_coordinator().has_value());
  const std::string sha(64, 'a');
  std::atomic<bool> welcomed_stale{false};
  FakeRouter deposed(
      [&](const std::string&, const proto::Message& m) -> std::vector<proto::Message> {
        if (std::holds_alternative<proto::Hello>(m) && !welcomed_stale) {
          // Equal to the highest the agent has seen: accepted, so the orders below reach it.
          return {proto::Welcome{1, 200, 10, second}};
        }
        return {};
      },
      agent_ep);
  ASSERT_TRUE(wait_until(
      [&] {
        for (const auto& r : deposed.received())
          if (std::holds_alternative<proto::Hello>(r.message)) return true;
        return false;
      },
      20000, 50))
      << f.diagnostics();
  proto::Order stale{"r9-1", 9, "demo", "update", "v2", sha, 1000, 0, 0, "", ""};
  stale.epoch = first;
  deposed.send(f.host_id(0), stale);
  proto::Order absent = stale;
  absent.order_id = "r9-2";
  absent.epoch = 0;
  deposed.send(f.host_id(0), absent);
  auto ack_of = [&](const std::string& id) -> std::optional<proto::OrderAck> {
    for (const auto& r : deposed.received())
      if (auto* a = std::get_if<proto::OrderAck>(&r.message); a && a->order_id == id) return *a;
    return std::nullopt;
  };
  ASSERT_TRUE(wait_until([&] { return ack_of("r9-1") && ack_of("r9-2"); }, 20000, 50)) << f.diagnostics();
  EXPECT_EQ(ack_of("r9-1")->status, "rejected");
  EXPECT_EQ(ack_of("r9-1")->message, "stale epoch " + std::to_string(first) + " < " + std::to_string(second));
  EXPECT_EQ(ack_of("r9-2")->status, "rejected");
  EXPECT_EQ(ack_of("r9-2")->message, "stale epoch 0 < " + std::to_string(second));
  // Nothing ran: no download asked for, no progress or report, v1 still served, nothing recorded.
  for (const auto& r : deposed.received()) {
    EXPECT_FALSE(std::holds_alternative<proto::FetchChunk>(r.message));
    if (const auto* p = std::get_if<proto::Progress>(&r.message)) EXPECT_NE(p->order_id.rfind("r9-", 0), 0u);
    if (const auto* p = std::get_if<proto::Report>(&r.message)) EXPECT_NE(p->order_id.rfind("r9-", 0), 0u);
  }
  EXPECT_EQ(f.served_version(0).value_or("?"), "v1");
  auto journal = agent_journal(f, 0);
  EXPECT_TRUE(journal["active"].is_null()) << journal.dump();
  EXPECT_TRUE(journal["queue"].empty()) << journal.dump();
  EXPECT_EQ(journal.dump().find("r9-1"), std::string::npos) << "a refused order leaves no result";
  const std::string log = f.agent_log(0);
  EXPECT_NE(log.find("order r9-1 refused, sent by a deposed coordinator: stale epoch"), std::string::npos) << log;

  // A Welcome of a lower epoch: the agent drops the connection rather than follow it.
  welcomed_stale = true;
  deposed.send(f.host_id(0), proto::Welcome{1, 200, 10, first});
  ASSERT_TRUE(wait_until(
      [&] {
        return f.agent_log(0).find("the coordinator at " + agent_ep + " is behind this agent's epoch") !=
               std::string::npos;
      },
      20000, 50))
      << f.diagnostics();
  EXPECT_EQ(journaled_epoch(f), second) << "the highest epoch is kept";

  // Restarted, the agent still knows the epoch (journaled), and still refuses.
  welcomed_stale = false;
  const int welcomes = count_of(f.agent_log(0), "welcomed by the coordinator");
  f.restart_agent(0);
  ASSERT_TRUE(wait_until([&] { return count_of(f.agent_log(0), "welcomed by the coordinator") > welcomes; }, 20000, 50))
      << f.diagnostics();
  proto::Order late = stale;
  late.order_id = "r9-3";
  late.epoch = second - 1;
  deposed.send(f.host_id(0), late);
  ASSERT_TRUE(wait_until([&] { return ack_of("r9-3").has_value(); }, 20000, 50)) << f.diagnostics();
  EXPECT_EQ(ack_of("r9-3")->status, "rejected");
  EXPECT_EQ(f.served_version(0).value_or("?"), "v1");
}

}  // namespace
}  // namespace gantry::testing
