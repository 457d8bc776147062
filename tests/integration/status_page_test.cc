// The status page in headless Chromium during real rollouts with real agents: at the canary
// pause, mid-rollout (a second pause), and after a bad release was rolled back. Each time the
// DOM the page's script built must show every host in the state /status reports for it, and a
// screenshot is kept in <build>/test-output/ (docs/MONITORING.md shows one). The page at 10,000
// hosts (a synthetic /status: no fleet of that size fits a test) must aggregate its batches.
//
// Every moment captured is one the rollout holds (a pause, the end), so the page and /status are
// compared while nothing moves.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "tests/support/fleet.h"

using gantry::testing::bin_dir;
using gantry::testing::CmdResult;
using gantry::testing::Fleet;
using gantry::testing::FleetOptions;
using gantry::testing::Process;
using gantry::testing::TempDir;
using gantry::testing::wait_until;

namespace {

nlohmann::json parse(const std::string& s) {
  try {
    return nlohmann::json::parse(s);
  } catch (const std::exception&) {
    return nlohmann::json();
  }
}

std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const std::string p = dir + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

int port_of(const std::string& host_port) { return std::stoi(host_port.substr(host_port.rfind(':') + 1)); }

std::string output_dir() {
  const std::string d = bin_dir() + "/test-output";
  std::filesystem::create_directories(d);
  return d;
}

class Browser {
 public:
  explicit Browser(std::string chromium) : chromium_(std::move(chromium)) {}

  // The DOM after the page's script ran (3 s of virtual time: its first fetches and renders).
  std::string dom(const std::string& url) {
    auto argv = base();
    argv.insert(argv.end(), {"--virtual-time-budget=3000", "--dump-dom", url});
    CmdResult r = gantry::testing::run(argv, 90000);
    EXPECT_EQ(r.exit_code, 0) << r.err.substr(0, 4000);
    return r.out;
  }

  void screenshot(const std::string& url, const std::string& file, const std::string& size = "1200,1100") {
    std::filesystem::remove(file);
    auto argv = base();
    argv.insert(argv.end(), {"--virtual-time-budget=3000", "--hide-scrollbars", "--window-size=" + size,
                             "--screenshot=" + file, url});
    CmdResult r = gantry::testing::run(argv, 90000);
    EXPECT_EQ(r.exit_code, 0) << r.err.substr(0, 4000);
    EXPECT_TRUE(std::filesystem::exists(file) && std::filesystem::file_size(file) > 1000) << file << "\n"
                                                                                          << r.err.substr(0, 4000);
    std::cerr << "status page screenshot: " << file << "\n";
  }

 private:
  std::vector<std::string> base() const {
    return {chromium_,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--user-data-dir=" + profile_.path()};
  }
  std::string chromium_;
  TempDir profile_{"gantry-chromium"};
};

// host id -> the data-state of its cell in the page's rollout picture.
std::map<std::string, std::string> cell_states(const std::string& dom) {
  std::map<std::string, std::string> out;
  static const std::regex cell(R"re(class="tile [a-z_]+" data-host="([^"]+)" data-state="([a-z_]+)")re");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), cell); it != std::sregex_iterator(); ++it) {
    out.emplace((*it)[1].str(), (*it)[2].str());  // the first: the rollout's grid, not the detail panel
  }
  return out;
}

class StatusPage : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = find_program("chromium");
    if (chromium_.empty()) GTEST_SKIP() << "chromium not installed (Debian package chromium; scripts/install-deps)";
  }

  static void start_fleet(Fleet& f) {
    f.start_coordinator();
    f.start_all_agents();
    ASSERT_TRUE(wait_until(
        [&] {
          auto j = parse(f.cli({"--json", "hosts"}, 10000).out);
          int n = 0;
          if (j.contains("hosts"))
            for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
          return n == f.size();
        },
        30000))
        << f.diagnostics();
  }

  // /status as the page reads it; null if it does not answer.
  static nlohmann::json status(Fleet& f) {
    auto r = gantry::testing::http_get(port_of(f.endpoints().http), "/status", 5000);
    return r && r->status == 200 ? parse(r->body) : nlohmann::json();
  }

  static nlohmann::json get_json(Fleet& f, const std::string& path) {
    auto r = gantry::testing::http_get(port_of(f.endpoints().http), path, 5000);
    return r && r->status == 200 ? parse(r->body) : nlohmann::json();
  }

  static nlohmann::json rollout(Fleet& f, const std::string& version) {
    auto s = status(f);
    if (s.contains("rollouts"))
      for (const auto& r : s["rollouts"])
        if (r.value("version", "") == version) return r;
    return {};
  }

  // Waits until the rollout to `version` satisfies `done` in /status (it is held there: a pause
  // or its end), then checks that the page shows each of its hosts in the state /status gives.
  std::string capture(Fleet& f, Browser& b, const std::string& version,
                      const std::function<bool(const nlohmann::json&)>& done, const std::string& shot) {
    nlohmann::json ro;
    EXPECT_TRUE(wait_until(
        [&] {
          ro = rollout(f, version);
          return !ro.is_null() && done(ro);
        },
        90000, 200))
        << ro.dump(2) << f.diagnostics();
    const std::string url = "http://" + f.endpoints().http + "/";
    const std::string dom = b.dom(url);
    EXPECT_EQ(dom.find("loading…"), std::string::npos) << "the script did not run:\n" << dom.substr(0, 4000);
    ro = rollout(f, version);  // the same (held) state, read after the page
    const auto cells = cell_states(dom);
    EXPECT_EQ(cells.size(), ro["hosts"].size()) << dom.substr(0, 8000);
    for (const auto& h : ro["hosts"]) {
      const std::string id = h.value("host_id", "");
      auto it = cells.find(id);
      if (it == cells.end()) {
        ADD_FAILURE() << id << " has no cell\n" << dom.substr(0, 8000);
        continue;
      }
      EXPECT_EQ(it->second, h.value("state", "")) << id << " in " << shot;
    }
    const auto& c = ro["counts"];
    EXPECT_NE(dom.find("batch " + std::to_string(ro.value("batch", 0)) + " of " +
                       std::to_string(ro.value("batches_total", 0))),
              std::string::npos);
    EXPECT_NE(dom.find("healthy " + std::to_string(c.value("healthy", 0)) + " "), std::string::npos);
    b.screenshot(url, output_dir() + "/" + shot);
    return dom;
  }

  std::string chromium_;
};

TEST_F(StatusPage, ShowsEveryHostsStateThroughARolloutAndARollback) {
  FleetOptions o;
  o.min_healthy_ms = 300;
  Fleet f(6, o);
  start_fleet(f);
  Browser b(chromium_);

  // v1 in batches of 1, 2, 3, pausing after the first two (a canary, then a checkpoint).
  const auto v1 = f.make_release("v1", "healthy");
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v1", "--release", v1, "--batches", "1,2,3",
                  "--pause-after", "0,1", "--max-failures", "1", "--reason", "status page test"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  std::string dom = capture(
      f, b, "v1",
      [](const auto& ro) { return ro.value("waiting_promote", false) && ro["counts"].value("healthy", 0) == 1; },
      "status-page-start.png");
  EXPECT_NE(dom.find("waiting for promote (gantry rollout promote"), std::string::npos);
  EXPECT_NE(dom.find("failure budget: <b>0</b> used of 1 (1 left)"), std::string::npos) << dom.substr(0, 8000);
  EXPECT_NE(dom.find("status page test"), std::string::npos);  // why, in the rollout and the history

  ASSERT_EQ(f.cli({"rollout", "promote", "--service", "demo"}).exit_code, 0) << f.diagnostics();
  dom = capture(
      f, b, "v1",
      [](const auto& ro) { return ro.value("waiting_promote", false) && ro["counts"].value("healthy", 0) == 3; },
      "status-page-mid.png");
  EXPECT_NE(dom.find("paused after batch 2"), std::string::npos);
  // Phone-sized: the same page, narrow.
  b.screenshot("http://" + f.endpoints().http + "/", output_dir() + "/status-page-phone.png", "390,1400");

  ASSERT_EQ(f.cli({"rollout", "promote", "--service", "demo"}).exit_code, 0) << f.diagnostics();
  ASSERT_TRUE(wait_until([&] { return rollout(f, "v1").value("phase", "") == "succeeded"; }, 90000, 200))
      << f.diagnostics();

  // v2 fails on host-3 (batch 2): the budget (0) is spent and the hosts already updated are
  // rolled back.
  gantry::testing::run({"touch", f.root(2) + "/FAIL-v2"});
  const auto v2 = f.make_release("v2", "healthy");
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", v2, "--batches", "1,2,3",
             "--max-failures", "0", "--reason", "bad release on host-3"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  dom = capture(
      f, b, "v2",
      [](const auto& ro) {
        const std::string p = ro.value("phase", "");
        return p == "rolled_back" || p == "failed" || p == "aborted";
      },
      "status-page-rollback.png");
  const auto ro = rollout(f, "v2");
  EXPECT_EQ(ro.value("phase", ""), "rolled_back") << ro.dump(2);
  EXPECT_GE(ro["counts"].value("rolled_back", 0), 1) << ro.dump(2);
  EXPECT_NE(dom.find("<b>spent</b>"), std::string::npos) << dom.substr(0, 8000);
  EXPECT_NE(dom.find("class=\"tile failed\" data-host=\"host-3\""), std::string::npos) << dom.substr(0, 8000);
  EXPECT_NE(dom.find("bad release on host-3"), std::string::npos);
  // The fleet view: every host, by service and version.
  for (int i = 0; i < f.size(); ++i) EXPECT_NE(dom.find("data-fleet-host=\"" + f.host_id(i) + "\""), std::string::npos);

  // The history (/rollouts) has both rollouts, though /status carries only the latest of the
  // service; each links to its own view.
  const auto hist = get_json(f, "/rollouts");
  ASSERT_EQ(hist["rollouts"].size(), 2u) << hist.dump(2);
  for (const auto& h : hist["rollouts"]) {
    const std::string id = std::to_string(h.value("id", 0));
    EXPECT_NE(dom.find("data-history=\"" + id + "\""), std::string::npos) << id;
    EXPECT_NE(dom.find("href=\"#rollout=" + id + "\""), std::string::npos) << id;
  }
  // v1's own view (#rollout=ID, read from /rollouts/ID: an ended rollout, from the store): each
  // host in the state /rollouts/ID gives it, its timeline in the cell's tooltip, the event log.
  const uint64_t v1_id = hist["rollouts"][1].value("id", 0);
  ASSERT_EQ(hist["rollouts"][1].value("version", ""), "v1");
  const auto view = get_json(f, "/rollouts/" + std::to_string(v1_id));
  ASSERT_EQ(view.value("phase", ""), "succeeded") << view.dump(2);
  const std::string url = "http://" + f.endpoints().http + "/#rollout=" + std::to_string(v1_id);
  const std::string vdom = b.dom(url);
  EXPECT_NE(vdom.find("<h2>Rollout " + std::to_string(v1_id) + "</h2>"), std::string::npos) << vdom.substr(0, 8000);
  const auto cells = cell_states(vdom);
  EXPECT_EQ(cells.size(), view["hosts"].size());
  for (const auto& h : view["hosts"]) {
    const std::string id = h.value("host_id", "");
    EXPECT_EQ(cells.count(id) ? cells.at(id) : "(no cell)", h.value("state", "")) << id;
    ASSERT_TRUE(h.contains("timeline") && !h["timeline"].empty()) << h.dump(2);
    const auto at = vdom.find("data-host=\"" + id + "\"");
    const auto title = vdom.find("title=\"", at);
    ASSERT_NE(title, std::string::npos);
    const std::string tip = vdom.substr(title, vdom.find('"', title + 7) - title);
    for (const auto& t : h["timeline"]) {
      std::string phase = t.value("phase", "");
      std::replace(phase.begin(), phase.end(), '_', ' ');
      const auto us = phase.find(' ');  // the page replaces the first underscore only
      EXPECT_NE(tip.find(us == std::string::npos ? phase : phase.substr(0, us)), std::string::npos)
          << id << ": " << tip;
    }
  }
  EXPECT_NE(vdom.find("event log (" + std::to_string(view["events"].size()) + ")"), std::string::npos);
  EXPECT_NE(vdom.find("rollout succeeded"), std::string::npos);
  b.screenshot(url, output_dir() + "/status-page-rollout-view.png");
  b.screenshot(url, output_dir() + "/status-page-rollout-view-phone.png", "390,1400");

  // A rollout that does not exist: 404 from the endpoint, said on the page.
  EXPECT_EQ(gantry::testing::http_get(port_of(f.endpoints().http), "/rollouts/999", 5000)->status, 404);
  EXPECT_NE(b.dom("http://" + f.endpoints().http + "/#rollout=999").find("rollout 999: not found"), std::string::npos);
}

// /status is compressed once per snapshot and named by an ETag: a page that holds the snapshot
// gets 304 and no body; the page itself (static) likewise.
TEST_F(StatusPage, StatusAnswersNotModifiedForTheSnapshotThePageHolds) {
  Fleet f(2);
  start_fleet(f);
  const int port = port_of(f.endpoints().http);
  gantry::testing::TempDir d("gantry-etag");
  const auto head = [&](const std::vector<std::string>& extra, const std::string& path) {
    std::filesystem::remove(d.sub("body"));  // curl writes no file for an answer without a body
    std::vector<std::string> argv = {"curl", "-s", "-o", d.sub("body"), "-D", "-", "--max-time", "10"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("http://127.0.0.1:" + std::to_string(port) + path);
    return gantry::testing::run(argv, 20000).out;
  };
  if (find_program("curl").empty()) GTEST_SKIP() << "curl not installed";
  for (const std::string path : {"/status", "/"}) {
    const std::string h1 = head({"-H", "Accept-Encoding: gzip"}, path);
    EXPECT_NE(h1.find("Content-Encoding: gzip"), std::string::npos) << h1;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(h1, m, std::regex("ETag: (\"[^\"]+\")"))) << h1;
    const std::string h2 = head({"-H", "Accept-Encoding: gzip", "-H", "If-None-Match: " + m[1].str()}, path);
    // The same snapshot (nothing changes: the fleet is idle, and a snapshot lives at least 250 ms)
    // or a newer one: 304 for the one held, else 200 with a new ETag.
    if (h2.find(m[1].str()) != std::string::npos) {
      EXPECT_EQ(h2.rfind("HTTP/1.1 304", 0), 0u) << h2;
      EXPECT_TRUE(!std::filesystem::exists(d.sub("body")) || std::filesystem::file_size(d.sub("body")) == 0);
    } else {
      EXPECT_EQ(h2.rfind("HTTP/1.1 200", 0), 0u) << h2;
    }
    // Without gzip: the plain JSON, the same ETag scheme.
    const std::string h3 = head({}, path);
    EXPECT_EQ(h3.find("Content-Encoding"), std::string::npos) << h3;
  }
  const auto plain = gantry::testing::http_get(port, "/status", 5000);
  ASSERT_TRUE(plain && plain->status == 200);
  EXPECT_TRUE(parse(plain->body).contains("hosts")) << plain->body.substr(0, 400);
}

// 10,000 hosts in 4 batches: each batch is one bar with counts by state, not 10,000 cells, and
// the fleet table shows its first rows, unknown hosts first. The page comes from a real
// coordinator; /status beside it is synthetic, served by python3's http.server.
TEST_F(StatusPage, TenThousandHostsAggregatePerBatch) {
  const std::string python = find_program("python3");
  if (python.empty()) GTEST_SKIP() << "python3 not installed";
  Fleet f(0);
  f.start_coordinator();
  auto page = gantry::testing::http_get(port_of(f.endpoints().http), "/", 5000);
  ASSERT_TRUE(page && page->status == 200);

  TempDir site("gantry-page");
  std::ofstream(site.sub("index.html")) << page->body;
  nlohmann::json hosts = nlohmann::json::array(), slots = nlohmann::json::array(), batches = nlohmann::json::array();
  const int sizes[] = {100, 900, 4000, 5000};
  int n = 0;
  for (int b = 0; b < 4; ++b) {
    nlohmann::json ids = nlohmann::json::array();
    for (int k = 0; k < sizes[b]; ++k, ++n) {
      const std::string id = "h" + std::to_string(n);
      const std::string st = b < 2    ? "healthy"
                             : b == 2 ? (k < 10     ? "failed"
                                         : k < 3000 ? "ordered"
                                                    : "healthy")
                                      : "pending";
      const bool online = !(b == 3 && k < 7);
      // Desired state (the coordinator's drift figure): 13 online hosts of batch 4 drift.
      const bool drifted = b == 3 && k >= 7 && k < 20;
      nlohmann::json host = {{"host_id", id},
                             {"drift", drifted},
                             {"state", online ? "online" : "unknown"},
                             {"online", online},
                             {"labels", {{"zone", "z" + std::to_string(k % 3)}}},
                             {"agent_version", "0.1.0"},
                             {"last_seen_ms_ago", 100},
                             {"services",
                              {{{"name", "web"},
                                {"current_version", st == "healthy" ? "v2" : "v1"},
                                {"previous_version", ""},
                                {"state", "idle"},
                                {"order_id", ""},
                                {"phase", ""}}}}};
      if (drifted) {
        host["desired"] = "v2";
        host["drift_services"] = {{{"service", "web"}, {"running", "v1"}, {"desired", "v2"}}};
      }
      hosts.push_back(host);
      slots.push_back({{"host_id", id},
                       {"state", st},
                       {"batch", b},
                       {"domain", ""},
                       {"from_version", "v1"},
                       {"order_id", ""},
                       {"message", ""}});
      ids.push_back(id);
    }
    batches.push_back(ids);
  }
  const int64_t started_at =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count() -
      300000;
  nlohmann::json ro = {{"id", 42},
                       {"service", "web"},
                       {"version", "v2"},
                       {"kind", "rollout"},
                       {"phase", "running"},
                       {"waiting_promote", false},
                       {"created_by", "admin"},
                       {"reason", "large fleet"},
                       {"created_at", started_at},
                       {"finished_at", 0},
                       {"revision", 0},
                       {"batch", 3},
                       {"batches_total", 4},
                       {"batches", batches},
                       {"end_reason", ""},
                       {"plan", {{"batches", {100, 900, 4000, "100%"}}, {"max_failures", "1%"}}},
                       {"counts",
                        {{"total", 10000},
                         {"pending", 5000},
                         {"ordered", 2990},
                         {"healthy", 2000},
                         {"failed", 10},
                         {"unknown", 0},
                         {"rolling_back", 0},
                         {"rolled_back", 0},
                         {"rollback_failed", 0},
                         {"skipped", 0}}},
                       {"hosts", slots},
                       {"recent_events", nlohmann::json::array()}};
  // Metric analysis as the rollout's state carries it (coordinator/rollout/analysis.h).
  ro["analysis"] = {{"gate_batch", 1},
                    {"gate_since", started_at},
                    {"gate_until", 0},
                    {"hold", false},
                    {"queries",
                     {{{"name", "error_rate"},
                       {"verdict", "pass"},
                       {"value", 0.001},
                       {"threshold", "< 0.01"},
                       {"consecutive_failures", 0},
                       {"failure_limit", 2},
                       {"message", "0.001 < 0.01"}},
                      {{"name", "latency_p99"},
                       {"verdict", "fail"},
                       {"value", 0.9},
                       {"threshold", "< 0.5"},
                       {"consecutive_failures", 1},
                       {"failure_limit", 2},
                       {"message", "0.9 not < 0.5"}}}}};
  const nlohmann::json desired = {{{"service", "web"}, {"version", "v2"}, {"held", false}, {"drifted_hosts", 13}}};
  std::ofstream(site.sub("status"))
      << nlohmann::json({{"rollouts", {ro}}, {"hosts", hosts}, {"epoch", 1}, {"desired", desired}}).dump();

  const int port = gantry::testing::free_tcp_port();
  Process server({python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", site.path(), std::to_string(port)},
                 site.sub("server.log"));
  ASSERT_TRUE(wait_until([&] { return gantry::testing::http_get(port, "/status", 2000).has_value(); }, 20000));

  Browser b(chromium_);
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/index.html";
  const std::string dom = b.dom(url);
  EXPECT_EQ(dom.find("loading…"), std::string::npos) << dom.substr(0, 4000);
  EXPECT_NE(dom.find("10000 hosts, 9993 online, 7 unknown"), std::string::npos) << dom.substr(0, 4000);
  // Batch 1 (100 hosts) as cells; batches 2-4 (900, 4000, 5000: over 300) as bars with counts.
  EXPECT_EQ(cell_states(dom).size(), 100u);
  EXPECT_NE(dom.find("healthy 900"), std::string::npos);
  EXPECT_NE(dom.find("ordered 2990 · healthy 1000 · failed 10"), std::string::npos) << "counts in legend order";
  EXPECT_NE(dom.find("data-agg=\"pending\""), std::string::npos);
  EXPECT_NE(dom.find("failure budget: <b>10</b> used of 100 (90 left)"), std::string::npos);
  // The fleet table: 300 rows, the 7 unknown hosts first.
  EXPECT_NE(dom.find("300 of 10000 hosts shown, unknown first"), std::string::npos);
  const auto first_row = dom.find("data-fleet-host=\"");
  ASSERT_NE(first_row, std::string::npos);
  const std::string want = "data-fleet-host=\"h5000\"";
  EXPECT_EQ(dom.compare(first_row, want.size(), want), 0) << dom.substr(first_row, 60);
  // Then the drifted ones (after the 7 unknown), marked, with what they should run.
  const auto drifted_row = dom.find("class=\" drifted\" data-fleet-host=\"h5007\" data-drift=\"1\"");
  EXPECT_NE(drifted_row, std::string::npos) << dom.substr(first_row, 3000);
  EXPECT_LT(dom.find("data-fleet-host=\"h5006\""), drifted_row);
  EXPECT_LT(drifted_row, dom.find("data-fleet-host=\"h5020\""));
  EXPECT_NE(dom.find("13 drifted"), std::string::npos);
  EXPECT_NE(dom.find("drift: wants v2"), std::string::npos);
  // The analysis verdicts on the rollout's view.
  EXPECT_NE(dom.find("class=\"verdict pass\" data-verdict=\"error_rate\""), std::string::npos);
  EXPECT_NE(dom.find("class=\"verdict fail\" data-verdict=\"latency_p99\""), std::string::npos);
  EXPECT_NE(dom.find("analysis gate after batch 2"), std::string::npos);
  b.screenshot(url, output_dir() + "/status-page-10000-hosts.png");
}

}  // namespace
