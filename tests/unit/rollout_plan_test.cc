// Plan parsing, validation and JSON round trips; the planner's schedule and selectors.
#include <gtest/gtest.h>

#include "coordinator/rollout/plan.h"
#include "coordinator/rollout/planner.h"
#include "rollout_test_util.h"

using namespace gantry;
using namespace gantry::rollout;
using namespace gantry::rollout::testing;
using nlohmann::json;

TEST(PlanAmount, ParseAndResolve) {
  auto a = Amount::parse("25%");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->percent);
  EXPECT_EQ(a->value, 25u);
  EXPECT_EQ(a->str(), "25%");
  EXPECT_EQ(a->resolve(10, true), 3u);  // 2.5 rounds up
  EXPECT_EQ(a->resolve(0, false), 0u);
  EXPECT_EQ(a->resolve(0, true), 1u);
  EXPECT_EQ(Amount::parse("10%")->resolve(20, true), 2u);
  EXPECT_EQ(Amount::parse("1%")->resolve(5, false), 1u);
  EXPECT_EQ(Amount::parse("0%")->resolve(5, false), 0u);
  EXPECT_EQ(Amount::parse("3")->resolve(100, true), 3u);
  EXPECT_EQ(Amount::parse("0")->resolve(100, false), 0u);
  EXPECT_EQ(Amount::parse("100%")->resolve(7, true), 7u);
  for (const char* bad : {"", "%", "-1", "1.5", "abc", "101%", "5 %", "12x"}) {
    EXPECT_FALSE(Amount::parse(bad).ok()) << bad;
  }
}

namespace {
Plan full_plan() {
  Plan p;
  p.batches = ramp({"1", "10%", "50%", "100%"});
  p.max_failures = *Amount::parse("10%");
  p.max_failures_per_batch = *Amount::parse("1");
  p.unknown_hosts = UnknownHosts::kWait;
  p.unknown_wait_ms = 45'000;
  p.min_healthy_ms = 10'000;
  p.healthy_deadline_ms = 120'000;
  p.host_timeout_ms = 300'000;
  p.progress_deadline_ms = 3'600'000;
  p.batch_delay_ms = 500;
  p.pause_after = {0, 2};
  p.domain_label = "zone";
  p.max_per_domain = *Amount::parse("34%");
  p.auto_rollback = false;
  p.rollback_batch_size = 2;
  return p;
}
}  // namespace

TEST(PlanJson, RoundTripDefaultsAndFull) {
  for (const Plan& p : {Plan{}, full_plan()}) {
    auto back = Plan::from_json(p.to_json());
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, p);
    EXPECT_EQ(back->to_json(), p.to_json());
    // Through text too, as the daemon stores it.
    auto again = Plan::from_json(json::parse(p.to_json().dump()));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, p);
  }
}

TEST(PlanJson, AcceptsOperatorForms) {
  auto p = Plan::from_json(json::parse(R"({
    "batches": [1, "10%", "50%", "100%"], "max_failures": "5%", "max_failures_per_batch": 1,
    "unknown_hosts": "wait", "unknown_wait": "2m", "min_healthy_time": "30s",
    "healthy_deadline": "5m", "host_timeout": "1h", "progress_deadline": 7200000,
    "batch_delay": "500ms", "pause_after": [0], "domain_label": "zone", "max_per_domain": "1",
    "auto_rollback": true, "rollback": {"batch_size": 2}})"));
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->batches, ramp({"1", "10%", "50%", "100%"}));
  EXPECT_EQ(p->max_failures, *Amount::parse("5%"));
  EXPECT_EQ(p->unknown_wait_ms, 120'000);
  EXPECT_EQ(p->min_healthy_ms, 30'000);
  EXPECT_EQ(p->healthy_deadline_ms, 300'000);
  EXPECT_EQ(p->host_timeout_ms, 3'600'000);
  EXPECT_EQ(p->progress_deadline_ms, 7'200'000);
  EXPECT_EQ(p->batch_delay_ms, 500);
  EXPECT_EQ(p->pause_after, std::vector<uint32_t>{0});
  EXPECT_EQ(p->max_per_domain, *Amount::parse("1"));
  EXPECT_EQ(p->rollback_batch_size, 2u);
  // An empty object is the default plan.
  auto d = Plan::from_json(json::object());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, Plan{});
}

TEST(PlanJson, RejectsEveryBadFieldNamingIt) {
  struct Case {
    const char* json;
    const char* must_mention;
  };
  const Case cases[] = {
      {R"([1,2])", "object"},
      {R"({"batchez": [1]})", "batchez"},
      {R"({"batches": []})", "batches"},
      {R"({"batches": 3})", "batches"},
      {R"({"batches": [1, 0]})", "batches[1]"},
      {R"({"batches": ["0%"]})", "batches[0]"},
      {R"({"batches": ["150%"]})", "batches[0]"},
      {R"({"batches": [-2]})", "batches[0]"},
      {R"({"batches": [1.5]})", "batches[0]"},
      {R"({"batches": ["ten"]})", "ten"},
      {R"({"max_failures": -1})", "max_failures"},
      {R"({"max_failures": "x%"})", "max_failures"},
      {R"({"max_failures": true})", "max_failures"},
      {R"({"max_failures_per_batch": "200%"})", "max_failures_per_batch"},
      {R"({"unknown_hosts": "ignore"})", "unknown_hosts"},
      {R"({"unknown_hosts": 1})", "unknown_hosts"},
      {R"({"unknown_wait": "10 parsecs"})", "unknown_wait"},
      {R"({"unknown_wait": -5})", "unknown_wait"},
      {R"({"min_healthy_time": "5d"})", "min_healthy_time"},
      {R"({"healthy_deadline": "s"})", "healthy_deadline"},
      {R"({"host_timeout": 1.5})", "host_timeout"},
      {R"({"progress_deadline": [1]})", "progress_deadline"},
      {R"({"batch_delay": "-1s"})", "batch_delay"},
      {R"({"pause_after": 0})", "pause_after"},
      {R"({"pause_after": [-1]})", "pause_after[0]"},
      {R"({"pause_after": [0, 0]})", "pause_after[1]"},
      {R"({"domain_label": 5})", "domain_label"},
      {R"({"domain_label": "zone", "max_per_domain": 0})", "max_per_domain"},
      {R"({"max_per_domain": 1})", "domain_label"},
      {R"({"domain_label": "zone", "max_per_domain": "1.5"})", "max_per_domain"},
      {R"({"auto_rollback": "yes"})", "auto_rollback"},
      {R"({"rollback": 3})", "rollback"},
      {R"({"rollback": {"batch_size": -1}})", "rollback.batch_size"},
      {R"({"rollback": {"size": 1}})", "rollback.size"},
  };
  for (const auto& c : cases) {
    auto p = Plan::from_json(json::parse(c.json));
    ASSERT_FALSE(p.ok()) << c.json;
    EXPECT_NE(p.error().message.find(c.must_mention), std::string::npos) << c.json << " -> " << p.error().message;
  }
}

// ---- planner ----

namespace {
std::vector<size_t> sizes(const Schedule& s) {
  std::vector<size_t> out;
  for (const auto& b : s.batches) out.push_back(b.size());
  return out;
}
}  // namespace

// converge: "auto" (default) or "report"; anything else, whatever bytes it holds, is refused
// with the field named (the text is the operator's: invalid UTF-8, control characters, huge).
TEST(PlanJson, ConvergeIsAutoOrReportAndNothingElse) {
  EXPECT_EQ(Plan::from_json(nlohmann::json::object())->converge, "auto");
  EXPECT_EQ(Plan::from_json({{"converge", "report"}})->converge, "report");
  auto back = Plan::from_json(Plan::from_json({{"converge", "report"}})->to_json());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->converge, "report");
  for (const nlohmann::json& bad : {nlohmann::json("Auto"), nlohmann::json(""),
                                    nlohmann::json(std::string(100000, 'a')), nlohmann::json("auto\n\x1b[31m"),
                                    nlohmann::json(1), nlohmann::json(nullptr), nlohmann::json::array({"auto"})}) {
    auto p = Plan::from_json({{"converge", bad}});
    ASSERT_FALSE(p) << bad.dump();
    EXPECT_NE(p.error().message.find("converge"), std::string::npos) << p.error().message;
  }
  std::string not_utf8 = "au\xff\xfeto";
  auto p = Plan::from_json({{"converge", not_utf8}});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("converge"), std::string::npos);
}

TEST(Planner, CountsRepeatTheLastEntry) {
  Plan p;
  p.batches = ramp({"1", "2", "2"});
  auto s = make_schedule(p, make_hosts(5));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(sizes(*s), (std::vector<size_t>{1, 2, 2}));
  EXPECT_EQ(s->batches[0], std::vector<std::string>{"web-1"});
  EXPECT_EQ(s->batches[2], (std::vector<std::string>{"web-4", "web-5"}));
  p.batches = ramp({"2"});
  EXPECT_EQ(sizes(*make_schedule(p, make_hosts(5))), (std::vector<size_t>{2, 2, 1}));
  p.batches = ramp({"10"});
  EXPECT_EQ(sizes(*make_schedule(p, make_hosts(3))), (std::vector<size_t>{3}));
  p.batches = ramp({"1", "1", "1", "1", "1"});  // more entries than hosts
  EXPECT_EQ(sizes(*make_schedule(p, make_hosts(2))), (std::vector<size_t>{1, 1}));
}

TEST(Planner, PercentagesRampOnTwentyHosts) {
  Plan p;
  p.batches = ramp({"1", "10%", "50%", "100%"});
  auto s = make_schedule(p, make_hosts(20));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(sizes(*s), (std::vector<size_t>{1, 2, 10, 7}));
  p.batches = ramp({"1%"});  // rounds up to one host, repeats
  EXPECT_EQ(sizes(*make_schedule(p, make_hosts(3))), (std::vector<size_t>{1, 1, 1}));
  p.batches = ramp({"30%"});
  EXPECT_EQ(sizes(*make_schedule(p, make_hosts(10))), (std::vector<size_t>{3, 3, 3, 1}));
}

TEST(Planner, FailureBudgetsResolve) {
  Plan p;
  p.batches = ramp({"1", "2", "2"});
  p.max_failures = *Amount::parse("10%");
  p.max_failures_per_batch = *Amount::parse("50%");
  auto s = make_schedule(p, make_hosts(5));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->failure_budget_hosts, 1u);  // 0.5 rounds up
  EXPECT_EQ(s->per_batch_budgets, (std::vector<uint32_t>{1, 1, 1}));
  EXPECT_EQ(s->per_batch_budget_hosts, 1u);
  p.max_failures_per_batch = *Amount::parse("0");
  s = make_schedule(p, make_hosts(5));
  EXPECT_EQ(s->per_batch_budget_hosts, 0u);
  EXPECT_EQ(batch_budget(p, 10), 0u);
  p.max_failures_per_batch.reset();
  EXPECT_FALSE(make_schedule(p, make_hosts(5))->per_batch_budget_hosts.has_value());
}

// 10 hosts in 3 zones, given interleaved: c = web-1,4,7,10; a = web-2,5,8; b = web-3,6,9.
TEST(Planner, DomainsVisitedInOrderAtMostOnePerBatch) {
  Plan p;
  p.batches = ramp({"1", "30%", "100%"});
  p.domain_label = "zone";
  p.max_per_domain = *Amount::parse("1");
  auto s = make_schedule(p, make_hosts(10, {"c", "a", "b"}));
  ASSERT_TRUE(s.ok()) << s.error().message;
  using V = std::vector<std::string>;
  ASSERT_EQ(s->batches.size(), 5u);
  EXPECT_EQ(s->batches[0], (V{"web-2"}));
  EXPECT_EQ(s->batches[1], (V{"web-5", "web-3", "web-1"}));
  EXPECT_EQ(s->batches[2], (V{"web-8", "web-6", "web-4"}));  // nominal 6 left: one per zone
  EXPECT_EQ(s->batches[3], (V{"web-9", "web-7"}));           // zone a is used up
  EXPECT_EQ(s->batches[4], (V{"web-10"}));
}

TEST(Planner, DomainsFillGreedilyFromTheEarliest) {
  Plan p;
  p.batches = ramp({"1", "30%", "100%"});
  p.domain_label = "zone";
  p.max_per_domain = *Amount::parse("2");
  auto s = make_schedule(p, make_hosts(10, {"c", "a", "b"}));
  ASSERT_TRUE(s.ok());
  using V = std::vector<std::string>;
  ASSERT_EQ(s->batches.size(), 4u);
  EXPECT_EQ(s->batches[0], (V{"web-2"}));
  EXPECT_EQ(s->batches[1], (V{"web-5", "web-8", "web-3"}));
  EXPECT_EQ(s->batches[2], (V{"web-6", "web-9", "web-1", "web-4"}));
  EXPECT_EQ(s->batches[3], (V{"web-7", "web-10"}));
  // Without a cap the hosts are simply grouped by domain.
  p.max_per_domain.reset();
  s = make_schedule(p, make_hosts(10, {"c", "a", "b"}));
  EXPECT_EQ(s->batches[1], (V{"web-5", "web-8", "web-3"}));
  EXPECT_EQ(s->batches[2].size(), 6u);
  // A percentage resolves against each domain's size: 50% of 3 -> 2, of 4 -> 2.
  p.max_per_domain = *Amount::parse("50%");
  EXPECT_EQ(domain_cap(p, 3), 2u);
  EXPECT_EQ(domain_cap(p, 4), 2u);
  EXPECT_EQ(domain_cap(p, 1), 1u);
}

TEST(Planner, HostsWithoutTheLabelFormTheirOwnDomain) {
  Plan p;
  p.batches = ramp({"100%"});
  p.domain_label = "rack";
  p.max_per_domain = *Amount::parse("1");
  auto hosts = make_hosts(3);
  hosts[1].labels["rack"] = "r1";
  auto s = make_schedule(p, hosts);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->batches.size(), 2u);  // "" holds web-1 and web-3, r1 holds web-2
  EXPECT_EQ(s->batches[0], (std::vector<std::string>{"web-1", "web-2"}));
}

TEST(Planner, Errors) {
  Plan p;
  EXPECT_FALSE(make_schedule(p, {}).ok());
  auto dup = make_hosts(2);
  dup[1].host_id = "web-1";
  EXPECT_NE(make_schedule(p, dup).error().message.find("web-1"), std::string::npos);
  p.batches = {Amount{false, 0}};
  EXPECT_FALSE(make_schedule(p, make_hosts(2)).ok());
  p = Plan{};
  p.batches = ramp({"1", "100%"});
  p.pause_after = {2};
  auto e = make_schedule(p, make_hosts(5));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("pause_after"), std::string::npos);
  p.pause_after = {1};
  EXPECT_TRUE(make_schedule(p, make_hosts(5)).ok());
  p.pause_after.clear();
  p.max_per_domain = Amount{false, 1};  // no domain_label
  EXPECT_FALSE(make_schedule(p, make_hosts(5)).ok());
  p.domain_label = "zone";
  p.max_per_domain = Amount{false, 0};
  EXPECT_FALSE(make_schedule(p, make_hosts(5)).ok());
  p.max_per_domain.reset();
}

TEST(Planner, Selectors) {
  auto sel = parse_selector("role=web, zone=eu-1");
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->size(), 2u);
  EXPECT_TRUE(selector_matches(*sel, {{"role", "web"}, {"zone", "eu-1"}, {"x", "y"}}));
  EXPECT_FALSE(selector_matches(*sel, {{"role", "web"}, {"zone", "eu-2"}}));
  EXPECT_FALSE(selector_matches(*sel, {{"role", "web"}}));
  auto all = parse_selector("");
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(selector_matches(*all, {}));
  for (const char* bad : {"role", "role=", "=web", "role=web,,zone=a", "a=1,a=2"}) {
    EXPECT_FALSE(parse_selector(bad).ok()) << bad;
  }
}
