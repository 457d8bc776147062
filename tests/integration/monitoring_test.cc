// Monitoring end to end: the coordinator's /metrics checked by promtool and scraped by a real
// Prometheus server, /status compared with `gantry status --json`, the status page rendered by
// headless Chromium, and the CLI's plain (non-terminal) watch output and exit codes.
//
// Each test holds its rollout paused after the first batch (--pause-after 0), so "during a
// rollout" is a state the test waits for, not a moment it hopes to hit.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "tests/support/fleet.h"

using gantry::testing::bin_dir;
using gantry::testing::CmdResult;
using gantry::testing::Fleet;
using gantry::testing::FleetOptions;
using gantry::testing::Process;
using gantry::testing::TempDir;
using gantry::testing::wait_until;

namespace {

nlohmann::json json_of(const std::string& s) {
  try {
    return nlohmann::json::parse(s);
  } catch (const std::exception&) {
    return nlohmann::json();
  }
}

// The absolute path of a program in PATH, or "" (then the test is skipped: install-deps installs
// these, so CI runs them).
std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    std::string p = dir + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

int http_port(Fleet& f) {
  const std::string& a = f.endpoints().http;
  return std::stoi(a.substr(a.rfind(':') + 1));
}

std::string metrics(Fleet& f) {
  auto r = gantry::testing::http_get(http_port(f), "/metrics", 5000);
  if (!r || r->status != 200) return "";
  return r->body;
}

// The value of one exposition line "name{labels} value" whose text starts with `series`.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

void start_fleet(Fleet& f) {
  f.start_coordinator();
  f.start_all_agents();
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = json_of(f.cli({"--json", "hosts"}, 10000).out);
        int n = 0;
        if (j.contains("hosts"))
          for (const auto& h : j["hosts"]) n += h.value("online", false) ? 1 : 0;
        return n == f.size();
      },
      20000))
      << f.diagnostics();
}

nlohmann::json current_rollout(Fleet& f) {
  auto st = json_of(f.cli({"--json", "status", "--service", "demo"}, 10000).out);
  if (!st.contains("rollouts") || st["rollouts"].empty()) return {};
  return st["rollouts"][0];
}

// Starts a v1 rollout in batches 1,rest that pauses after the first batch, and waits until it
// has paused there with one healthy host.
void start_paused_rollout(Fleet& f) {
  auto rel = f.make_release("v1", "healthy");
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", "v1", "--release", rel, "--batches", "1,100%",
                  "--pause-after", "0", "--reason", "monitoring test"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  ASSERT_TRUE(wait_until(
      [&] {
        auto ro = current_rollout(f);
        const std::string phase = ro.value("phase", "");
        if (phase != "" && phase != "running" && phase != "paused") return true;  // ended: fail now
        return ro.value("waiting_promote", false) && ro["counts"].value("healthy", 0) == 1;
      },
      60000, 200))
      << current_rollout(f).dump(2) << f.diagnostics();
  auto ro = current_rollout(f);
  ASSERT_TRUE(ro.value("waiting_promote", false) && ro["counts"].value("healthy", 0) == 1)
      << ro.dump(2) << f.diagnostics();
}

// Drops what legitimately differs between two reads a moment apart (ages in ms).
void strip_volatile(nlohmann::json& j) {
  if (j.is_object()) {
    j.erase("last_seen_ms_ago");
    for (auto& [k, v] : j.items()) strip_volatile(v);
  } else if (j.is_array()) {
    for (auto& v : j) strip_volatile(v);
  }
}

// Where tests leave artifacts for people (screenshots): <build>/test-output/.
std::string output_dir() {
  std::string d = bin_dir() + "/test-output";
  std::filesystem::create_directories(d);
  return d;
}

std::vector<std::string> chromium_argv(const std::string& chromium, const TempDir& profile) {
  return {chromium,
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          "--disable-dev-shm-usage",
          "--user-data-dir=" + profile.path()};
}

// The fleet these tests run: the harness default (secure, like a real deployment).
FleetOptions options() { return FleetOptions{}; }

}  // namespace

TEST(Monitoring, PromtoolAcceptsMetricsDuringAndAfterRollout) {
  const std::string promtool = find_program("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus; scripts/install-deps)";
  Fleet f(3, options());
  start_fleet(f);
  start_paused_rollout(f);

  auto check = [&](const std::string& what) {
    std::string text = metrics(f);
    ASSERT_FALSE(text.empty()) << f.diagnostics();
    const std::string file = f.dir() + "/metrics-" + what + ".txt";
    std::ofstream(file) << text;
    auto r = gantry::testing::run({"sh", "-c", "\"$0\" check metrics < \"$1\"", promtool, file}, 60000);
    EXPECT_EQ(r.exit_code, 0) << what << ":\n" << r.out << r.err << "\n" << text;
    EXPECT_EQ(r.out + r.err, "") << what << ": promtool has lint findings";
  };
  check("paused");
  {
    std::string m = metrics(f);
    EXPECT_EQ(sample(m, "gantry_hosts{state=\"online\"}"), 3.0) << m;
    EXPECT_EQ(sample(m, "gantry_hosts{state=\"unknown\"}"), 0.0) << m;
    EXPECT_EQ(sample(m, "gantry_rollouts_active{phase=\"paused\"}").value_or(0) +
                  sample(m, "gantry_rollouts_active{phase=\"running\"}").value_or(0),
              1.0)
        << m;
    EXPECT_NE(m.find("gantry_rollout_batch{rollout=\""), std::string::npos) << m;
    EXPECT_TRUE(std::regex_search(
        m, std::regex("gantry_rollout_hosts\\{rollout=\"\\d+\",service=\"demo\",state=\"healthy\"\\} 1\n")))
        << m;
    EXPECT_TRUE(std::regex_search(
        m, std::regex("gantry_rollout_hosts\\{rollout=\"\\d+\",service=\"demo\",state=\"pending\"\\} 2\n")))
        << m;
    EXPECT_TRUE(std::regex_search(m, std::regex("gantry_build_info\\{version=\"[^\"]+\",protocol=\"\\d+\"\\} 1\n")))
        << m;
    EXPECT_GE(sample(m, "gantry_orders_sent_total").value_or(0), 1.0) << m;
  }

  auto r = f.cli({"rollout", "promote", "--service", "demo"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = f.cli({"rollout", "watch", "--service", "demo"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  // The ended counter and the agents' phase timings arrive with the last reports.
  ASSERT_TRUE(
      wait_until([&] { return sample(metrics(f), "gantry_rollouts_ended_total{phase=\"succeeded\"}") == 1.0; }, 10000))
      << metrics(f);
  check("succeeded");
  std::string m = metrics(f);
  EXPECT_EQ(sample(m, "gantry_reports_total{outcome=\"succeeded\"}"), 3.0) << m;
  EXPECT_EQ(sample(m, "gantry_agent_phase_duration_seconds_count{phase=\"swap\"}"), 3.0) << m;
  EXPECT_EQ(sample(m, "gantry_agent_phase_duration_seconds_count{phase=\"verify\"}"), 3.0) << m;
  EXPECT_EQ(sample(m, "gantry_service_hosts{service=\"demo\",version=\"v1\"}"), 3.0) << m;
}

TEST(Monitoring, StatusEndpointCarriesTheSameFactsAsCliStatusJson) {
  Fleet f(2, options());
  start_fleet(f);
  start_paused_rollout(f);
  // /status is a snapshot republished at most every 250 ms; wait until it caught up.
  nlohmann::json http, cli;
  bool had_timelines = false;
  bool same = wait_until(
      [&] {
        auto h = gantry::testing::http_get(http_port(f), "/status", 5000);
        if (!h || h->status != 200) return false;
        http = json_of(h->body);
        cli = json_of(f.cli({"--json", "status"}, 10000).out);
        strip_volatile(http);
        strip_volatile(cli);
        // /status also carries the active rollout's per-host timelines; the operator reply
        // leaves them out (`rollout show` has them). Everything else is the same.
        had_timelines = false;
        if (http.contains("rollouts"))
          for (auto& r : http["rollouts"])
            if (r.contains("hosts"))
              for (auto& h : r["hosts"]) had_timelines |= h.erase("timeline") > 0;
        return !http.is_null() && http == cli;
      },
      20000, 300);
  EXPECT_TRUE(same) << "http:\n" << http.dump(2) << "\ncli:\n" << cli.dump(2);
  EXPECT_TRUE(had_timelines) << "the active rollout's hosts on /status have no timeline";
  ASSERT_EQ(http["rollouts"].size(), 1u) << http.dump(2);
  EXPECT_EQ(http["rollouts"][0]["counts"].value("healthy", 0), 1);
  EXPECT_FALSE(http["rollouts"][0]["recent_events"].empty()) << http.dump(2);
  EXPECT_EQ(http["hosts"].size(), 2u);
  auto page = gantry::testing::http_get(http_port(f), "/", 5000);
  ASSERT_TRUE(page.has_value());
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("getJson('/status'"), std::string::npos);  // the page polls /status
  auto missing = gantry::testing::http_get(http_port(f), "/nope", 5000);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 404);
}

// Clients that stall cannot take the monitoring endpoint away: 300 connections that never finish
// their request (more than the 128 served at once), one whose request head is too large and one
// that never reads its answer are all open while a scrape is served. Before, the server handled
// one connection at a time, waiting up to 2 s on each: the scrape waited ~10 minutes.
TEST(Monitoring, StalledHttpClientsDoNotBlockScrapes) {
  Fleet f(0, options());
  f.start_coordinator();
  const int port = http_port(f);
  auto connect_to = [&] {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    return fd;
  };
  std::vector<int> fds;
  for (int i = 0; i < 300; ++i) {
    int fd = connect_to();
    const std::string partial = "GET /metrics HTTP/1.1\r\nHost: x\r\n";  // no blank line: never complete
    EXPECT_EQ(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), static_cast<ssize_t>(partial.size()));
    fds.push_back(fd);
  }
  int reader = connect_to();  // asks, never reads
  const std::string ask = "GET /status HTTP/1.1\r\n\r\n";
  EXPECT_EQ(::send(reader, ask.data(), ask.size(), MSG_NOSIGNAL), static_cast<ssize_t>(ask.size()));
  fds.push_back(reader);

  auto r = gantry::testing::http_get(port, "/metrics", 10000);
  ASSERT_TRUE(r.has_value()) << "no answer to a scrape while stalled clients were connected";
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("gantry_"), std::string::npos);

  int big = connect_to();  // a request head over 8 KiB is refused with 431, not read forever
  std::string head = "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n";
  (void)::send(big, head.data(), head.size(), MSG_NOSIGNAL);
  timeval tv{10, 0};
  ::setsockopt(big, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[64] = {};
  ssize_t n = ::recv(big, buf, sizeof buf - 1, 0);
  ::close(big);
  EXPECT_GT(n, 0);
  EXPECT_EQ(std::string(buf).rfind("HTTP/1.1 431 ", 0), 0u) << buf;
  for (int fd : fds) ::close(fd);
  EXPECT_TRUE(wait_until([&] { return f.coordinator_log().find("HTTP connections open") != std::string::npos; }, 10000))
      << "no log line about the full connection table";
}

TEST(Monitoring, PrometheusServerScrapesTheCoordinatorDuringRollout) {
  const std::string prometheus = find_program("prometheus");
  if (prometheus.empty()) GTEST_SKIP() << "prometheus not installed (Debian package prometheus; scripts/install-deps)";
  Fleet f(2, options());
  start_fleet(f);
  start_paused_rollout(f);

  TempDir prom("gantry-prom");
  const int port = gantry::testing::free_tcp_port();
  std::ofstream(prom.sub("prometheus.yml")) << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                                               "scrape_configs:\n  - job_name: gantry\n    static_configs:\n"
                                               "      - targets: ['"
                                            << f.endpoints().http << "']\n";
  Process server({prometheus, "--config.file=" + prom.sub("prometheus.yml"), "--storage.tsdb.path=" + prom.sub("data"),
                  "--web.listen-address=127.0.0.1:" + std::to_string(port), "--storage.tsdb.retention.time=1h"},
                 prom.sub("prometheus.log"));

  // Prometheus' query API, until the scraped series show the fleet and the paused rollout.
  auto query = [&](const std::string& q) -> nlohmann::json {
    std::string enc;
    for (unsigned char c : q) {
      if (std::isalnum(c) || c == '_')
        enc += static_cast<char>(c);
      else {
        char b[4];
        std::snprintf(b, sizeof b, "%%%02X", c);
        enc += b;
      }
    }
    auto r = gantry::testing::http_get(port, "/api/v1/query?query=" + enc, 5000);
    if (!r || r->status != 200) return {};
    auto j = json_of(r->body);
    if (j.value("status", "") != "success") return {};
    return j["data"]["result"];
  };
  auto value_of = [&](const nlohmann::json& result, const std::string& label, const std::string& want) -> std::string {
    if (!result.is_array()) return "";
    for (const auto& s : result)
      if (s["metric"].value(label, "") == want) return s["value"][1].get<std::string>();
    return "";
  };
  nlohmann::json hosts;
  ASSERT_TRUE(wait_until(
      [&] {
        hosts = query("gantry_hosts");
        return value_of(hosts, "state", "online") == "2";
      },
      60000, 500))
      << hosts.dump(2) << "\nprometheus log:\n"
      << gantry::testing::read_file(prom.sub("prometheus.log")).substr(0, 8000);
  EXPECT_EQ(value_of(hosts, "state", "unknown"), "0") << hosts.dump(2);
  EXPECT_EQ(value_of(hosts, "job", "gantry"), "2") << "first series of job gantry: " << hosts.dump(2);
  auto healthy = query("gantry_rollout_hosts{service=\"demo\",state=\"healthy\"}");
  EXPECT_EQ(value_of(healthy, "state", "healthy"), "1") << healthy.dump(2);
  auto up = query("up{job=\"gantry\"}");
  EXPECT_EQ(value_of(up, "job", "gantry"), "1") << up.dump(2);
  auto info = query("gantry_rollout_info");
  EXPECT_EQ(value_of(info, "version", "v1"), "1") << info.dump(2);
  EXPECT_TRUE(server.alive()) << gantry::testing::read_file(prom.sub("prometheus.log"));
}

TEST(Monitoring, StatusPageShowsHostsAndProgressInHeadlessChromium) {
  const std::string chromium = find_program("chromium");
  if (chromium.empty()) GTEST_SKIP() << "chromium not installed (Debian package chromium; scripts/install-deps)";
  Fleet f(3, options());
  start_fleet(f);
  start_paused_rollout(f);
  const std::string url = "http://" + f.endpoints().http + "/";

  TempDir profile("gantry-chromium");
  auto argv = chromium_argv(chromium, profile);
  argv.insert(argv.end(), {"--virtual-time-budget=3000", "--dump-dom", url});
  CmdResult dom = gantry::testing::run(argv, 90000);
  ASSERT_EQ(dom.exit_code, 0) << dom.err.substr(0, 4000);
  // After the page's script ran: every host tile, the rollout and its progress.
  for (int i = 0; i < f.size(); ++i)
    EXPECT_NE(dom.out.find(">" + f.host_id(i) + "<"), std::string::npos) << f.host_id(i) << "\n" << dom.out;
  EXPECT_NE(dom.out.find("batch 1 of 2"), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find("healthy 1"), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find("pending 2"), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find("waiting for promote"), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find("3 hosts, 3 online"), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find("class=\"tile healthy\""), std::string::npos) << dom.out;
  EXPECT_EQ(dom.out.find("loading…"), std::string::npos) << "the script did not run:\n" << dom.out;

  const std::string shot = output_dir() + "/status.png";
  std::filesystem::remove(shot);
  argv = chromium_argv(chromium, profile);
  argv.insert(argv.end(), {"--virtual-time-budget=3000", "--hide-scrollbars", "--window-size=1200,800",
                           "--screenshot=" + shot, url});
  CmdResult r = gantry::testing::run(argv, 90000);
  EXPECT_EQ(r.exit_code, 0) << r.err.substr(0, 4000);
  ASSERT_TRUE(std::filesystem::exists(shot)) << r.err.substr(0, 4000);
  EXPECT_GT(std::filesystem::file_size(shot), 1000u);
  std::cerr << "status page screenshot: " << shot << "\n";
}

// `gantry rollout watch` and `start --wait` with stdout not a terminal (the harness pipes it):
// one plain progress line per change, never a carriage return or escape code, exit 0 on success,
// 1 with the reason on stderr when the rollout is rolled back.
TEST(Monitoring, WatchPrintsPlainProgressLinesAndExitCodes) {
  FleetOptions o = options();
  o.min_healthy_ms = 300;
  Fleet f(3, o);
  start_fleet(f);
  auto v1 = f.make_release("v1", "healthy");
  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v1", "--release", v1, "--batches", "1,100%", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  EXPECT_EQ(r.out.find('\r'), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\033["), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("progress: batch 1 of 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("succeeded"), std::string::npos) << r.out;
  // One line per change: no two consecutive progress lines say the same thing.
  {
    std::istringstream in(r.out);
    std::string line, prev;
    while (std::getline(in, line)) {
      if (line.rfind("progress: ", 0) != 0) continue;
      std::string key = line.substr(0, line.rfind(" elapsed "));
      EXPECT_NE(key, prev) << r.out;
      prev = key;
    }
  }

  // Watching a finished rollout returns at once with its result.
  auto w = f.cli({"rollout", "watch", "--service", "demo"});
  EXPECT_EQ(w.exit_code, 0) << w.out << w.err;
  auto wj = f.cli({"--json", "rollout", "watch", "--service", "demo"});
  EXPECT_EQ(wj.exit_code, 0) << wj.out << wj.err;
  EXPECT_EQ(json_of(wj.out).value("phase", ""), "succeeded") << wj.out;

  // A release that fails verification on host-3: the budget is spent, the rollout rolls back.
  gantry::testing::run({"touch", f.root(2) + "/FAIL-v2"});
  auto v2 = f.make_release("v2", "healthy");
  r = f.cli({"rollout", "start", "--service", "demo", "--version", "v2", "--release", v2, "--batches", "100%",
             "--max-failures", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err << f.diagnostics();
  EXPECT_NE(r.err.find("did not succeed"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find('\r'), std::string::npos) << r.out;
  auto again = f.cli({"rollout", "watch", "--service", "demo"});
  EXPECT_EQ(again.exit_code, 1) << again.out << again.err;

  // Usage errors and an unreachable coordinator have their own codes.
  EXPECT_EQ(f.cli({"rollout", "watch", "--no-such-flag"}).exit_code, 2);
  auto unreachable = gantry::testing::run(
      {bin_dir() + "/cli/gantry", "--coordinator",
       "tcp://127.0.0.1:" + std::to_string(gantry::testing::free_tcp_port()), "--timeout-ms", "500", "status"},
      30000);
  EXPECT_EQ(unreachable.exit_code, 4) << unreachable.out << unreachable.err;
}

// Every command's --help shows usage and examples, exits 0, and needs no coordinator.
TEST(Monitoring, EveryCommandHelpHasExamples) {
  const std::vector<std::vector<std::string>> commands = {{"hosts"},
                                                          {"status"},
                                                          {"release", "upload"},
                                                          {"rollout", "plan"},
                                                          {"rollout", "start"},
                                                          {"rollout", "watch"},
                                                          {"rollout", "show"},
                                                          {"rollout", "pause"},
                                                          {"rollout", "resume"},
                                                          {"rollout", "promote"},
                                                          {"rollout", "abort"},
                                                          {"rollback"},
                                                          {"history"},
                                                          {"audit"}};
  for (auto argv : commands) {
    std::string name;
    for (const auto& w : argv) name += w + " ";
    argv.insert(argv.begin(), bin_dir() + "/cli/gantry");
    argv.push_back("--help");
    auto r = gantry::testing::run(argv, 30000, {{"GANTRY_COORDINATOR", "tcp://127.0.0.1:1"}});
    EXPECT_EQ(r.exit_code, 0) << name << r.out << r.err;
    EXPECT_NE(r.out.find("Usage: gantry"), std::string::npos) << name << r.out;
    EXPECT_NE(r.out.find("Examples:\n  gantry"), std::string::npos) << name << r.out;
  }
  auto top = gantry::testing::run({bin_dir() + "/cli/gantry", "--help"}, 30000);
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_NE(top.out.find("Exit codes"), std::string::npos) << top.out;
}
