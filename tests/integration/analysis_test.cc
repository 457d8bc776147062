// Metric analysis end to end: Debian's prometheus on loopback scrapes real demo services under
// real traffic, and the coordinator gates each batch on PromQL queries against it. A release
// that passes every probe but answers 30% of its requests with 500 is caught by the analysis
// after its first batch and rolled back; a good one passes; Prometheus stopped while a gate is
// due pauses the rollout, and started again resumes it. No timing thresholds: every wait is
// for a state, bounded.
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/support/fleet.h"
#include "tests/support/load_client.h"

using gantry::testing::AgentSpec;
using gantry::testing::Fleet;
using gantry::testing::FleetOptions;
using gantry::testing::LoadClient;
using gantry::testing::Process;
using gantry::testing::TempDir;
using gantry::testing::wait_until;

namespace {

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

nlohmann::json json_of(const std::string& s) {
  try {
    return nlohmann::json::parse(s);
  } catch (const std::exception&) {
    return {};
  }
}

// Three hosts; each carries the label prom=<its Prometheus instance name> (instance_label).
std::vector<AgentSpec> hosts() {
  std::vector<AgentSpec> out;
  for (int i = 1; i <= 3; ++i) out.push_back({"host-" + std::to_string(i), {{"prom", "demo-" + std::to_string(i)}}});
  return out;
}

// A Prometheus scraping each host's demo service every 250 ms as instance demo-<i>, on a port
// of its own, with its data kept across stop() / start().
class Prometheus {
 public:
  Prometheus(const std::string& binary, int port, Fleet& f) : binary_(binary), port_(port) {
    std::ofstream cfg(dir_.sub("prometheus.yml"));
    cfg << "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 1s\n"
           "scrape_configs:\n  - job_name: demo\n    static_configs:\n";
    for (int i = 0; i < f.size(); ++i) {
      cfg << "      - targets: ['127.0.0.1:" << f.port(i) << "']\n        labels: {instance: 'demo-" << i + 1 << "'}\n";
    }
  }
  void start() {
    process_ = std::make_unique<Process>(
        std::vector<std::string>{
            binary_, "--config.file=" + dir_.sub("prometheus.yml"), "--storage.tsdb.path=" + dir_.sub("data"),
            "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--storage.tsdb.retention.time=1h"},
        dir_.sub("prometheus.log"));
  }
  void stop() {
    if (!process_) return;
    process_->signal(SIGTERM);
    if (!process_->wait_exit(20000)) process_->kill_and_reap();
    process_.reset();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Whether Prometheus answers a query with a value for every host's demo series.
  bool scraping(int hosts) const {
    auto r = gantry::testing::http_get(port_, "/api/v1/query?query=count(up%3D%3D1)", 2000);
    if (!r || r->status != 200) return false;
    auto j = json_of(r->body);
    try {
      return j["data"]["result"][0]["value"][1].get<std::string>() == std::to_string(hosts);
    } catch (const std::exception&) {
      return false;
    }
  }
  std::string log() const { return gantry::testing::read_file(dir_.sub("prometheus.log")).substr(0, 6000); }

 private:
  std::string binary_;
  int port_;
  TempDir dir_{"gantry-analysis-prom"};
  std::unique_ptr<Process> process_;
};

// Real traffic on every host's demo service: /work, 40 requests/s each.
struct Traffic {
  std::vector<std::unique_ptr<LoadClient>> clients;
  explicit Traffic(Fleet& f) {
    for (int i = 0; i < f.size(); ++i) {
      clients.push_back(std::make_unique<LoadClient>(f.port(i), "/work?ms=2", 40, 2, 2000));
      clients.back()->start();
    }
  }
  ~Traffic() {
    for (auto& c : clients) c->stop();
  }
};

nlohmann::json rollout_show(Fleet& f, uint64_t id) {
  return json_of(f.cli({"--json", "rollout", "show", std::to_string(id)}, 10000).out);
}

std::string events_text(const nlohmann::json& ro) {
  std::string out;
  for (const auto& e : ro.value("events", nlohmann::json::array())) out += e.value("message", "") + "\n";
  return out;
}

// The fleet on v1 (a plain rollout, no analysis), Prometheus scraping it, traffic flowing.
void fleet_on_v1(Fleet& f, Prometheus& prom) {
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
      30000))
      << f.diagnostics();
  auto rel = f.make_release("v1", "healthy");
  auto r = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v1", "--release", rel, "--batches", "100%", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  prom.start();
  ASSERT_TRUE(wait_until([&] { return prom.scraping(f.size()); }, 60000, 250)) << prom.log();
}

// The plan file: batches 1 then 2, the error ratio of the batch's hosts and the difference of
// the new version's hosts' error ratio from the old version's, soak `soak`.
std::string write_plan(Fleet& f, const std::string& name, const std::string& extra, const std::string& soak = "2s") {
  const std::string path = f.dir() + "/" + name + ".yaml";
  std::ofstream(path)
      << "batches: [1, 2]\n"
         "max_failures: 0\n"
      << extra
      << "analysis:\n"
         "  instance_label: prom\n"
         "  soak: "
      << soak
      << "\n"
         "  queries:\n"
         "    - name: error_ratio\n"
         "      query: |\n"  // two lines in the file; the CLI sends them as one
         "        sum(rate(demo_requests_total{instance=~\"{{batch_hosts}}\",path=\"/work\",code=\"500\"}[2s]))\n"
         "        / sum(rate(demo_requests_total{instance=~\"{{batch_hosts}}\",path=\"/work\"}[2s]))\n"
         "      threshold: '< 0.05'\n"
         "      interval: 500ms\n"
         "      failure_limit: 2\n"
         "    - name: errors_vs_baseline\n"
         "      query: 'sum(rate(demo_requests_total{instance=~\"{{hosts}}\",path=\"/work\",code=\"500\"}[2s]))"
         " / sum(rate(demo_requests_total{instance=~\"{{hosts}}\",path=\"/work\"}[2s]))'\n"
         "      compare: difference\n"
         "      threshold: '< 0.05'\n"
         "      interval: 500ms\n"
         "      failure_limit: 2\n";
  return path;
}

uint64_t start_rollout(Fleet& f, const std::string& version, const std::string& behaviour, const std::string& plan) {
  auto rel = f.make_release(version, behaviour);
  auto r =
      f.cli({"--json", "rollout", "start", "--service", "demo", "--version", version, "--release", rel, "-f", plan});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << f.diagnostics();
  return json_of(r.out).value("id", 0ULL);
}

// Waits (bounded) until rollout `id` satisfies `cond`; returns its last view.
nlohmann::json wait_rollout(Fleet& f, uint64_t id, const std::function<bool(const nlohmann::json&)>& cond,
                            int timeout_ms = 90000) {
  nlohmann::json ro;
  wait_until(
      [&] {
        ro = rollout_show(f, id);
        return ro.is_object() && cond(ro);
      },
      timeout_ms, 250);
  return ro;
}

bool ended(const nlohmann::json& ro) {
  const std::string p = ro.value("phase", "");
  return p == "succeeded" || p == "failed" || p == "rolled_back" || p == "aborted";
}

// The coordinator of `f` queries the Prometheus on `prom_port` as "default".
FleetOptions with_prometheus(int prom_port) {
  FleetOptions o;
  o.coordinator_extra_args = {"--prometheus", "http://127.0.0.1:" + std::to_string(prom_port)};
  return o;
}

}  // namespace

#define NEED_PROMETHEUS(var)                          \
  const std::string var = find_program("prometheus"); \
  if (var.empty()) GTEST_SKIP() << "prometheus not installed (Debian package prometheus; scripts/install-deps)"

TEST(Analysis, AReleaseThatPassesItsProbesButFailsItsUsersIsRolledBack) {
  NEED_PROMETHEUS(prometheus);
  const int prom_port = gantry::testing::free_tcp_port();
  Fleet f(hosts(), with_prometheus(prom_port));
  Prometheus prom(prometheus, prom_port, f);
  Traffic traffic(f);
  ASSERT_NO_FATAL_FAILURE(fleet_on_v1(f, prom));

  // `rollout plan` runs each query once against Prometheus and shows its value.
  const std::string plan = write_plan(f, "bad", "");
  // (Until Prometheus holds two samples of the new traffic in the window, the ratio is 0/0.)
  gantry::testing::CmdResult pr;
  nlohmann::json pj;
  wait_until(
      [&] {
        pr = f.cli({"--json", "rollout", "plan", "--service", "demo", "-f", plan});
        pj = json_of(pr.out);
        return pr.exit_code != 0 || (pj.contains("analysis") && pj["analysis"][0]["value"].is_number());
      },
      30000, 250);
  ASSERT_EQ(pr.exit_code, 0) << pr.out << pr.err << f.diagnostics();
  ASSERT_EQ(pj["analysis"].size(), 2u) << pr.out;
  EXPECT_TRUE(pj["analysis"][0]["value"].is_number()) << pr.out;
  EXPECT_EQ(pj["analysis"][0].value("verdict", ""), "pass") << pr.out;
  EXPECT_NE(pj["analysis"][0].value("query", "").find("instance=~\"demo-1|demo-2|demo-3\""), std::string::npos)
      << "hosts mapped to instances through their label: " << pr.out;

  // v2 passes every probe (its /health answers 200) and fails 30% of its /work requests.
  const uint64_t id = start_rollout(f, "v2", "errors", plan);
  ASSERT_NE(id, 0u);
  auto ro = wait_rollout(f, id, ended);
  const std::string ev = events_text(ro);
  ASSERT_EQ(ro.value("phase", ""), "rolled_back") << ro.dump(2) << f.diagnostics();
  EXPECT_NE(ev.find("host-1 healthy on v2"), std::string::npos) << "the probes passed: " << ev;
  EXPECT_NE(ev.find("stopping: analysis error_ratio failed"), std::string::npos) << ev;
  EXPECT_NE(ev.find("analysing batch 1 of 2"), std::string::npos) << ev;
  EXPECT_EQ(ev.find("batch 2 of 2: ordered"), std::string::npos) << "caught within the first batch's analysis: " << ev;
  EXPECT_NE(ev.find("host-1 rolled back to v1"), std::string::npos) << ev;
  // Every evaluation is in the record: query, value, verdict.
  EXPECT_NE(ev.find("analysis error_ratio (after batch 1): "), std::string::npos) << ev;
  EXPECT_NE(ev.find("[query: sum(rate(demo_requests_total{instance=~\"demo-1\",path=\"/work\",code=\"500\"}[2s]))"),
            std::string::npos)
      << ev;
  ASSERT_TRUE(ro.contains("analysis")) << ro.dump(2);
  EXPECT_TRUE(ro["analysis"]["queries"][0].value("failed", false)) << ro.dump(2);
  EXPECT_EQ(ro["analysis"]["queries"][0].value("verdict", ""), "fail") << ro.dump(2);
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v1") << f.diagnostics();

  // The human view names the query and its verdict.
  auto show = f.cli({"rollout", "show", std::to_string(id)});
  EXPECT_NE(show.out.find("error_ratio"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("fail"), std::string::npos) << show.out;
  // /metrics counted the evaluations.
  const std::string& http = f.endpoints().http;
  auto m = gantry::testing::http_get(std::stoi(http.substr(http.rfind(':') + 1)), "/metrics", 5000);
  ASSERT_TRUE(m && m->status == 200);
  EXPECT_NE(m->body.find("gantry_analysis_evaluations_total{verdict=\"fail\"} "), std::string::npos) << m->body;
  EXPECT_EQ(m->body.find("gantry_analysis_evaluations_total{verdict=\"fail\"} 0\n"), std::string::npos) << m->body;
}

TEST(Analysis, AGoodReleasePassesEveryGateAndAnInvalidQueryIsRefusedAtPlanTime) {
  NEED_PROMETHEUS(prometheus);
  const int prom_port = gantry::testing::free_tcp_port();
  Fleet f(hosts(), with_prometheus(prom_port));
  Prometheus prom(prometheus, prom_port, f);
  Traffic traffic(f);
  ASSERT_NO_FATAL_FAILURE(fleet_on_v1(f, prom));

  // PromQL that Prometheus refuses is a plan error, named.
  const std::string bad = f.dir() + "/invalid.yaml";
  std::ofstream(bad) << "analysis:\n  queries:\n    - name: broken\n      query: 'sum(rate(demo_requests_total[2s]'\n"
                        "      threshold: '< 1'\n";
  auto br = f.cli({"rollout", "plan", "--service", "demo", "-f", bad});
  EXPECT_EQ(br.exit_code, 3) << br.out << br.err;
  EXPECT_NE(br.err.find("analysis query broken: invalid PromQL"), std::string::npos) << br.err;

  const uint64_t id = start_rollout(f, "v2", "healthy", write_plan(f, "good", ""));
  ASSERT_NE(id, 0u);
  auto ro = wait_rollout(f, id, ended);
  const std::string ev = events_text(ro);
  ASSERT_EQ(ro.value("phase", ""), "succeeded") << ro.dump(2) << f.diagnostics();
  EXPECT_NE(ev.find("analysis after batch 1 of 2 passed"), std::string::npos) << ev;
  EXPECT_NE(ev.find("analysis after batch 2 of 2 passed"), std::string::npos) << ev;
  // Against the old version's hosts while there were some; not applicable once none is left.
  EXPECT_NE(ev.find("analysis errors_vs_baseline (after batch 1): canary "), std::string::npos) << ev;
  EXPECT_NE(ev.find("analysis errors_vs_baseline (after batch 2): not applicable"), std::string::npos) << ev;
  for (int i = 0; i < f.size(); ++i) EXPECT_EQ(f.served_version(i), "v2") << f.diagnostics();
}

TEST(Analysis, PrometheusStoppedMidRolloutPausesItAndBackResumesIt) {
  NEED_PROMETHEUS(prometheus);
  const int prom_port = gantry::testing::free_tcp_port();
  Fleet f(hosts(), with_prometheus(prom_port));
  Prometheus prom(prometheus, prom_port, f);
  Traffic traffic(f);
  ASSERT_NO_FATAL_FAILURE(fleet_on_v1(f, prom));

  // Paused for promotion after batch 1 (its gate passed), Prometheus is stopped; the gate after
  // batch 2 then cannot be evaluated.
  const uint64_t id = start_rollout(f, "v2", "healthy", write_plan(f, "paused", "pause_after: [0]\n"));
  ASSERT_NE(id, 0u);
  auto ro = wait_rollout(f, id, [](const nlohmann::json& r) { return ended(r) || r.value("waiting_promote", false); });
  ASSERT_TRUE(ro.value("waiting_promote", false)) << ro.dump(2) << f.diagnostics();
  prom.stop();
  auto promote = f.cli({"rollout", "promote", "--service", "demo"});
  ASSERT_EQ(promote.exit_code, 0) << promote.out << promote.err;

  ro = wait_rollout(f, id, [](const nlohmann::json& r) {
    return ended(r) ||
           (r.value("phase", "") == "paused" && r.contains("analysis") && r["analysis"].value("hold", false));
  });
  ASSERT_EQ(ro.value("phase", ""), "paused") << ro.dump(2) << f.diagnostics();
  std::string ev = events_text(ro);
  EXPECT_NE(ev.find("cannot reach Prometheus"), std::string::npos) << ev;
  EXPECT_NE(ev.find("paused: analysis "), std::string::npos) << ev;
  EXPECT_EQ(ro["counts"].value("healthy", 0), 3) << "batch 2 ran; its gate holds the rollout" << ro.dump(2);

  prom.start();
  ro = wait_rollout(f, id, ended);
  ev = events_text(ro);
  ASSERT_EQ(ro.value("phase", ""), "succeeded") << ro.dump(2) << f.diagnostics() << prom.log();
  EXPECT_NE(ev.find("resumed: every analysis query has a value again"), std::string::npos) << ev;
  EXPECT_NE(ev.find("analysis after batch 2 of 2 passed"), std::string::npos) << ev;
}
