// The Prometheus rendering follows the exposition format's rules (HELP/TYPE for every family,
// _total counters, cumulative histograms, escaped labels), and the CLI's tables stay aligned
// with non-ASCII cells. promtool checks the live output in tests/integration/monitoring_test.cc.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "cli/table.h"
#include "coordinator/server/metrics.h"

namespace gantry::coordinator {
namespace {

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

fleet::Registry two_hosts() {
  fleet::Registry reg;
  proto::Hello a{proto::kProtocolVersion, "web-1", "0.1.0", {{"zone", "a"}}, {{"web", "v2", "v1", "idle", ""}}};
  proto::Hello b{proto::kProtocolVersion, "web-2", "0.1.0", {{"zone", "b"}}, {{"web", "", "", "idle", ""}}};
  reg.on_hello(a, "id-1", 1000, 1000);
  reg.on_hello(b, "id-2", 1000, 1000);
  return reg;
}

TEST(Metrics, EveryFamilyHasHelpAndTypeAndCountersEndInTotal) {
  Metrics m;
  m.orders_sent = 3;
  m.reports["succeeded"] = 2;
  m.observe_timing("swap", 12);
  m.observe_timing("verify", 2500);
  m.observe_timing("not-a-phase", 1);  // ignored: agents may not invent label values
  auto reg = two_hosts();
  rollout::State st;
  st.id = 7;
  st.service = "web";
  st.version = "v2";
  std::vector<const rollout::State*> active = {&st};
  std::string text = render_metrics(m, reg, active);

  std::map<std::string, std::string> type_of;
  std::set<std::string> helped;
  const std::regex sample_re(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+]+|\+Inf)$)");
  for (const auto& l : lines_of(text)) {
    std::smatch mm;
    if (l.rfind("# HELP ", 0) == 0) {
      helped.insert(l.substr(7, l.find(' ', 7) - 7));
    } else if (l.rfind("# TYPE ", 0) == 0) {
      auto name = l.substr(7, l.find(' ', 7) - 7);
      type_of[name] = l.substr(l.rfind(' ') + 1);
      EXPECT_TRUE(helped.count(name)) << "TYPE before HELP or no HELP: " << name;
    } else {
      ASSERT_TRUE(std::regex_match(l, mm, sample_re)) << "not a sample line: " << l;
      std::string name = mm[1];
      std::string family = std::regex_replace(name, std::regex("_(bucket|sum|count)$"), "");
      ASSERT_TRUE(type_of.count(name) || type_of.count(family)) << "sample before its TYPE: " << l;
      std::string type = type_of.count(name) ? type_of[name] : type_of[family];
      if (type == "counter") {
        EXPECT_TRUE(name.size() > 6 && name.substr(name.size() - 6) == "_total") << name;
      }
    }
  }
  EXPECT_EQ(type_of["gantry_agent_phase_duration_seconds"], "histogram");
  EXPECT_EQ(type_of["gantry_hosts"], "gauge");
  EXPECT_NE(text.find("gantry_hosts{state=\"online\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_service_hosts{service=\"web\",version=\"v2\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_service_hosts{service=\"web\",version=\"\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry_rollout_info{rollout=\"7\",service=\"web\",version=\"v2\",phase=\"running\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry_orders_sent_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("process_start_time_seconds "), std::string::npos);
  EXPECT_EQ(text.find("not-a-phase"), std::string::npos);
  // Cumulative buckets: 12 ms lands in le=0.025 and above, 2.5 s in le=2.5 and above.
  EXPECT_NE(text.find("gantry_agent_phase_duration_seconds_bucket{phase=\"swap\",le=\"0.01\"} 0\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry_agent_phase_duration_seconds_bucket{phase=\"swap\",le=\"0.025\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry_agent_phase_duration_seconds_bucket{phase=\"verify\",le=\"1\"} 0\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry_agent_phase_duration_seconds_bucket{phase=\"verify\",le=\"2.5\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry_agent_phase_duration_seconds_bucket{phase=\"verify\",le=\"+Inf\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry_agent_phase_duration_seconds_sum{phase=\"verify\"} 2.5\n"), std::string::npos) << text;
}

TEST(Metrics, LabelValuesAreEscaped) {
  Metrics m;
  fleet::Registry reg;
  rollout::State st;
  st.id = 1;
  st.service = "we\"b\\x\ny";
  st.version = "v";
  std::string text = render_metrics(m, reg, {&st});
  EXPECT_NE(text.find("service=\"we\\\"b\\\\x\\ny\""), std::string::npos) << text;
}

TEST(Metrics, StatusPageEscapesWhatItShows) {
  const std::string& page = status_page_html();
  EXPECT_NE(page.find("function esc("), std::string::npos);
  EXPECT_NE(page.find("${esc(h.host_id)}"), std::string::npos);
  EXPECT_EQ(page.find("${h.host_id}"), std::string::npos);
  EXPECT_NE(page.find("getJson('/status'"), std::string::npos);
}

}  // namespace
}  // namespace gantry::coordinator

namespace gantry::cli {
namespace {

TEST(Table, ColumnsAlignWithMultiByteCells) {
  Table t({"HOST", "STATE", "NOTE"});
  t.row({"web-1", "healthy", "x"});
  t.row({"wé-2", "failed", "—"});
  std::ostringstream o;
  t.print(o);
  // Every row's second column starts at the same screen column.
  std::istringstream in(o.str());
  std::string l;
  std::vector<size_t> starts;
  while (std::getline(in, l)) {
    size_t col = 0, i = 0;
    for (; i < l.size() && l[i] != ' '; ++i) col += (static_cast<unsigned char>(l[i]) & 0xC0) != 0x80;
    for (; i < l.size() && l[i] == ' '; ++i) ++col;
    starts.push_back(col);
  }
  ASSERT_EQ(starts.size(), 3u) << o.str();
  EXPECT_EQ(starts[0], starts[1]) << o.str();
  EXPECT_EQ(starts[0], starts[2]) << o.str();
}

}  // namespace
}  // namespace gantry::cli
