// Issue 3 end to end: ten agents in three zones, a ramp with a failure-domain cap, a canary
// pause and promote, then a release that fails on two hosts with a budget of one, which is
// rolled back in reverse order of update. Checked against the plan preview, the event log and
// each service's own answer.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/support/fleet.h"

using gantry::testing::AgentSpec;
using gantry::testing::CmdResult;
using gantry::testing::Fleet;
using gantry::testing::json_of;
using gantry::testing::wait_until;

namespace {

std::vector<AgentSpec> ten_hosts_in_three_zones() {
  std::vector<AgentSpec> v;
  const char* zones[] = {"a", "a", "a", "a", "b", "b", "b", "c", "c", "c"};
  for (int i = 0; i < 10; ++i) v.push_back({"host-" + std::to_string(i + 1), {{"zone", zones[i]}, {"role", "web"}}});
  return v;
}

// Names listed after `prefix` in an event message like "batch 2 of 4: ordered a, b to v2".
std::vector<std::string> names_after(const std::string& msg, const std::string& prefix, const std::string& until) {
  auto p = msg.find(prefix);
  if (p == std::string::npos) return {};
  std::string rest = msg.substr(p + prefix.size());
  if (!until.empty()) rest = rest.substr(0, rest.find(until));
  std::vector<std::string> out;
  std::stringstream ss(rest);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

TEST(PlanE2E, ZonesCanaryPromoteThenBudgetExceededRollsBackInReverseOrder) {
  gantry::testing::FleetOptions opts;
  opts.min_healthy_ms = 300;
  Fleet f(ten_hosts_in_three_zones(), opts);
  f.start_coordinator();
  f.start_all_agents();
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = json_of(f.cli({"--json", "hosts"}, 10000));
        int n = 0;
        for (const auto& h : j.value("hosts", nlohmann::json::array())) n += h.value("online", false);
        return n == 10;
      },
      30000))
      << f.diagnostics();

  auto v1 = f.make_release("v1", "healthy");
  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v1", "--release", v1, "--batches", "100%", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();

  // The plan, as an operator writes it.
  std::string plan_path = f.dir() + "/plan.yaml";
  std::ofstream(plan_path) << "service: demo\n"
                              "version: v2\n"
                              "selector: role=web\n"
                              "batches: [1, 30%, 100%]\n"
                              "domain_label: zone\n"
                              "max_per_domain: 1\n"
                              "pause_after: [0]\n"
                              "max_failures: 0\n";
  auto preview = json_of(f.cli({"--json", "rollout", "plan", "-f", plan_path}));
  ASSERT_TRUE(preview.contains("batches")) << preview.dump();
  const auto planned = preview["batches"];
  ASSERT_EQ(planned.size(), 4u) << planned.dump();  // 1, then 3 a time (one per zone)
  EXPECT_EQ(planned[0].size(), 1u);
  size_t total = 0;
  for (const auto& b : planned) {
    total += b.size();
    std::set<std::string> zones;
    for (const auto& h : b) {
      int idx = std::stoi(h.get<std::string>().substr(5)) - 1;
      EXPECT_TRUE(zones.insert(f.spec(idx).labels.at("zone")).second) << "two hosts of one zone in batch " << b.dump();
    }
  }
  EXPECT_EQ(total, 10u);

  auto v2 = f.make_release("v2", "healthy");
  auto start = f.cli({"--json", "rollout", "start", "-f", plan_path, "--release", v2, "--reason", "zoned canary"});
  ASSERT_EQ(start.exit_code, 0) << start.out << start.err;
  uint64_t id = json_of(start).value("id", 0ULL);
  auto get = [&] { return json_of(f.cli({"--json", "rollout", "show", std::to_string(id)})); };
  ASSERT_TRUE(wait_until([&] { return get().value("waiting_promote", false); }, 30000)) << f.diagnostics();
  auto paused = get();
  EXPECT_EQ(paused["counts"].value("healthy", 0), 1);
  EXPECT_EQ(paused["counts"].value("pending", 0), 9);
  EXPECT_EQ(f.served_version(std::stoi(planned[0][0].get<std::string>().substr(5)) - 1), "v2");

  ASSERT_EQ(f.cli({"rollout", "promote", std::to_string(id)}).exit_code, 0);
  auto w = f.cli({"rollout", "watch", std::to_string(id)});
  ASSERT_EQ(w.exit_code, 0) << w.out << w.err << f.diagnostics();
  auto done = get();
  EXPECT_EQ(done["batches"], planned);
  // Orders went out batch by batch exactly as previewed.
  std::vector<std::vector<std::string>> ordered;
  for (const auto& e : done["events"]) {
    auto names = names_after(e.value("message", ""), ": ordered ", " to ");
    if (!names.empty()) ordered.push_back(names);
  }
  ASSERT_EQ(ordered.size(), planned.size());
  for (size_t i = 0; i < ordered.size(); ++i) EXPECT_EQ(nlohmann::json(ordered[i]), planned[i]) << "batch " << i;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f.served_version(i), "v2") << "host " << i;

  // v3 fails on the first host of batches 3 and 4: the second failure exceeds the budget of 1.
  std::string bad1 = planned[2][0].get<std::string>(), bad2 = planned[3][0].get<std::string>();
  for (const auto& b : {bad1, bad2}) {
    int idx = std::stoi(b.substr(5)) - 1;
    std::ofstream(f.root(idx) + "/FAIL-v3") << "x";
  }
  auto v3 = f.make_release("v3", "healthy");
  auto bad = f.cli({"rollout", "start", "--service", "demo", "--version", "v3", "--release", v3, "--batches",
                    "1,30%,100%", "--domain-label", "zone", "--max-per-domain", "1", "--max-failures", "1",
                    "--rollback-batch-size", "1", "--wait"});
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err << f.diagnostics();
  auto st = json_of(f.cli({"--json", "status", "--service", "demo"}));
  auto ro = st["rollouts"][0];
  EXPECT_EQ(ro.value("phase", ""), "rolled_back") << ro.dump(2);
  EXPECT_EQ(ro["counts"].value("failed", 0), 2) << ro.dump(2);
  auto full = json_of(f.cli({"--json", "rollout", "show", std::to_string(ro.value("id", 0))}));

  // Update order (as ordered), and the rollback order that must be its reverse, restricted to
  // the hosts that were healthy on v3.
  std::vector<std::string> update_order, rollback_order;
  for (const auto& e : full["events"]) {
    std::string m = e.value("message", "");
    for (auto& n : names_after(m, ": ordered ", " to ")) update_order.push_back(n);
    if (m.rfind("rolling back ", 0) == 0)
      for (auto& n : names_after(m, "rolling back ", " (to ")) rollback_order.push_back(n);
  }
  std::vector<std::string> expected;
  for (auto it = update_order.rbegin(); it != update_order.rend(); ++it) {
    if (*it != bad1 && *it != bad2) expected.push_back(*it);
  }
  EXPECT_FALSE(rollback_order.empty());
  EXPECT_EQ(rollback_order, expected) << full["events"].dump(1);
  EXPECT_EQ(ro["counts"].value("rolled_back", 0), static_cast<int>(expected.size()));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f.served_version(i), "v2") << "host " << i << f.diagnostics();

  // History: numbered revisions with who, why and how each ended.
  auto hist = json_of(f.cli({"--json", "history", "demo"}));
  ASSERT_EQ(hist["rollouts"].size(), 3u);
  EXPECT_EQ(hist["rollouts"][1].value("reason", ""), "zoned canary");
  EXPECT_EQ(hist["rollouts"][1].value("revision", 0), 2);
  EXPECT_EQ(hist["rollouts"][0].value("revision", 0), 0);
  EXPECT_EQ(hist["rollouts"][0].value("phase", ""), "rolled_back");
}

TEST(PlanE2E, BadPlanFieldsAreRefusedWithTheFieldNamed) {
  Fleet f(1);
  f.start_coordinator();
  f.start_all_agents();
  ASSERT_TRUE(wait_until(
      [&] {
        return json_of(f.cli({"--json", "hosts"}, 10000)).value("hosts", nlohmann::json::array()).size() == 1;
      },
      20000));
  std::string plan_path = f.dir() + "/bad.yaml";
  std::ofstream(plan_path) << "service: demo\nbatches: [1, 0]\n";
  auto r = f.cli({"rollout", "plan", "-f", plan_path});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("batches"), std::string::npos) << r.err;
  std::ofstream(plan_path) << "service: demo\nbatchez: [1]\n";
  r = f.cli({"rollout", "plan", "-f", plan_path});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("batchez"), std::string::npos) << r.err;
  // rollout start checks the plan before the fleet's state: a bad plan is named as such even
  // for a release not uploaded yet (the operator fixes both, not one after the other).
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "never-uploaded", "--batches", "abc"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("bad plan: plan field 'batches[0]'"), std::string::npos) << r.err;
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "never-uploaded"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("release never-uploaded of demo has not been uploaded"), std::string::npos) << r.err;
}
