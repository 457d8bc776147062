#include "coordinator/analysis/analysis_scheduler.h"

#include <cmath>

#include "common/util/log.h"
#include "common/util/text.h"
#include "coordinator/server/rollout_executor.h"

namespace gantry::coordinator::analysis {
namespace {

spdlog::logger* L() {
  static const auto l = log::get("analysis");
  return l.get();
}

constexpr size_t kMaxQueued = 256;
constexpr size_t kShownQuery = 512;  // of the query text in the record

std::string server_of(const std::map<std::string, std::string>& servers, const rollout::AnalysisSpec& spec) {
  auto it = servers.find(spec.prometheus);
  return it == servers.end() ? std::string() : it->second;
}

bool runs_old_version(const rollout::State& s, const rollout::HostSlot& h) {
  using rollout::HostState;
  if (h.from_version.empty() || h.from_version == s.version || h.running_version != h.from_version) return false;
  return h.state == HostState::kPending || h.state == HostState::kSkipped || h.state == HostState::kFailed ||
         h.state == HostState::kRolledBack;
}

// The job for query `qi` of `spec` with `vars`: rendered, or with the reason it cannot run.
QueryJob make_job(const rollout::AnalysisSpec& spec, uint32_t qi, const TemplateVars& vars, const std::string& server) {
  const rollout::AnalysisQuery& q = spec.queries[qi];
  QueryJob job;
  job.m.query = qi;
  job.server = server;
  job.compare = q.compare != rollout::Compare::kNone;
  auto canary = render(q.query, vars, Side::kCanary);
  if (!canary) {
    job.invalid = true;
    job.m.error = safe_text(canary.error().message, 300);
    job.m.promql = safe_text(q.query, kShownQuery);
    return job;
  }
  job.canary = *canary;
  job.m.promql = safe_text(job.canary, kShownQuery);
  if (job.compare) {
    if (vars.old_hosts.empty()) {
      job.m.not_applicable = true;
      return job;
    }
    auto base = render(q.baseline.empty() ? q.query : q.baseline, vars, Side::kBaseline);
    if (!base) {
      job.invalid = true;
      job.m.error = safe_text(base.error().message, 300);
      return job;
    }
    job.baseline = *base;
  }
  if (server.empty())
    job.m.error = "no Prometheus server named \"" + spec.prometheus + "\" (the coordinator's --prometheus)";
  return job;
}

}  // namespace

void measure(PromQuerier& q, QueryJob& job) {
  if (!job.m.error.empty() || job.m.not_applicable) return;
  auto v = q.instant(job.server, job.canary);
  if (!v) {
    job.invalid = v.error().code == "promql";
    job.m.error = v.error().message;
    return;
  }
  job.m.value = *v;
  if (!job.compare) return;
  auto b = q.instant(job.server, job.baseline);
  if (!b) {
    job.invalid = b.error().code == "promql";
    job.m.error = "baseline: " + b.error().message;
    return;
  }
  job.m.baseline = *b;
}

ThreadedQueryRunner::ThreadedQueryRunner(PromQuerier& q) : querier_(q), worker_([this] { run(); }) {}

ThreadedQueryRunner::~ThreadedQueryRunner() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void ThreadedQueryRunner::submit(QueryJob job) {
  std::lock_guard<std::mutex> lk(mu_);
  if (todo_.size() >= kMaxQueued) {
    job.m.error = "too many evaluations waiting for Prometheus";
    done_.push_back(std::move(job));
    return;
  }
  todo_.push_back(std::move(job));
  cv_.notify_one();
}

std::vector<QueryJob> ThreadedQueryRunner::take_done() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<QueryJob> out;
  out.swap(done_);
  return out;
}

void ThreadedQueryRunner::run() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !todo_.empty(); });
    if (stop_) return;
    QueryJob job = std::move(todo_.front());
    todo_.pop_front();
    lk.unlock();
    measure(querier_, job);
    lk.lock();
    done_.push_back(std::move(job));
  }
}

TemplateVars template_vars(const rollout::State& s, const fleet::Registry& reg, int gate) {
  TemplateVars v;
  v.service = s.service;
  v.new_version = s.version;
  const std::string& label = s.plan.analysis.instance_label;
  const auto instance = [&](const std::string& host) {
    if (!label.empty()) {
      auto it = reg.hosts().find(host);
      if (it != reg.hosts().end()) {
        auto l = it->second.labels.find(label);
        if (l != it->second.labels.end()) return l->second;
      }
    }
    return host;
  };
  const int batch = gate >= 0 ? gate : s.current_batch;
  for (const auto& h : s.hosts) {
    const std::string i = instance(h.host_id);
    if (!instance_ok(i)) {
      L()->warn("host {}: its instance \"{}\" cannot stand in a query; left out of the analysis", h.host_id,
                safe_text(i, 80));
      continue;
    }
    v.rollout_hosts.push_back(i);
    if (h.batch == batch) v.batch_hosts.push_back(i);
    if (h.state == rollout::HostState::kHealthy) v.new_hosts.push_back(i);
    if (runs_old_version(s, h)) {
      v.old_hosts.push_back(i);
      if (v.old_version.empty()) v.old_version = h.from_version;
    }
  }
  for (const auto& h : s.hosts) {
    if (!v.old_version.empty()) break;
    if (h.from_version != s.version) v.old_version = h.from_version;
  }
  return v;
}

AnalysisScheduler::AnalysisScheduler(RolloutExecutor& exec, const fleet::Registry& reg, QueryRunner& runner,
                                     Metrics& metrics, std::map<std::string, std::string> servers,
                                     std::function<Millis()> now)
    : exec_(exec), reg_(reg), runner_(runner), metrics_(metrics), servers_(std::move(servers)), now_(std::move(now)) {}

void AnalysisScheduler::tick() {
  for (auto& job : runner_.take_done()) {
    running_.erase({job.rollout_id, job.m.query});
    const auto* a = exec_.find(job.rollout_id);
    if (!a || job.m.query >= a->state.plan.analysis.queries.size()) continue;  // ended meanwhile
    const auto verdict = rollout::judge(a->state.plan.analysis.queries[job.m.query], job.m).verdict;
    metrics_.analysis_evaluations[rollout::verdict_name(verdict)]++;
    if (auto s = exec_.apply(job.rollout_id, rollout::EvAnalysis{job.m}); !s.ok() && s.error().code != "not_found")
      L()->error("rollout {}: cannot record an analysis evaluation: {}", job.rollout_id, s.error().message);
  }
  const Millis now = now_();
  std::vector<QueryJob> jobs;
  for (const auto& [id, a] : exec_.active()) {
    const rollout::State& s = a.state;
    const auto& spec = s.plan.analysis;
    if (!spec.enabled()) continue;
    const bool active = !s.halted && (s.phase == rollout::Phase::kRunning || s.phase == rollout::Phase::kPaused);
    for (uint32_t qi : rollout::due_queries(spec, s.analysis, active, now)) {
      if (running_.count({id, qi})) continue;
      const int gate = spec.queries[qi].gates() ? s.analysis.gate_batch : -1;
      QueryJob job = make_job(spec, qi, template_vars(s, reg_, gate), server_of(servers_, spec));
      job.rollout_id = id;
      job.m.gate_batch = gate;
      job.m.at = now;
      jobs.push_back(std::move(job));
    }
  }
  for (auto& job : jobs) {
    running_.insert({job.rollout_id, job.m.query});
    runner_.submit(std::move(job));
  }
}

Millis AnalysisScheduler::next_due() const {
  Millis best = 0;
  for (const auto& [id, a] : exec_.active()) {
    const rollout::State& s = a.state;
    if (!s.plan.analysis.enabled()) continue;
    const bool active = !s.halted && (s.phase == rollout::Phase::kRunning || s.phase == rollout::Phase::kPaused);
    if (!active) continue;
    for (uint32_t qi = 0; qi < s.plan.analysis.queries.size(); ++qi) {
      if (running_.count({id, qi})) continue;  // its result wakes the loop's next turn (at most 100 ms)
      const Millis t = rollout::due_at(s.plan.analysis, s.analysis, qi);
      if (t != 0 && (best == 0 || t < best)) best = t;
    }
  }
  return best;
}

nlohmann::json AnalysisScheduler::preview(const rollout::AnalysisSpec& spec, const std::string& service,
                                          const std::vector<rollout::HostCandidate>& hosts,
                                          const std::map<std::string, std::string>& servers, PromQuerier& q) {
  TemplateVars v;
  v.service = service;
  v.new_version = "";
  for (const auto& h : hosts) {
    std::string i = h.host_id;
    if (!spec.instance_label.empty()) {
      auto l = h.labels.find(spec.instance_label);
      if (l != h.labels.end()) i = l->second;
    }
    if (!instance_ok(i)) continue;
    v.rollout_hosts.push_back(i);
    if (v.old_version.empty()) v.old_version = h.running_version;
  }
  // Before the rollout every selected host is each side: the values show the queries work.
  v.batch_hosts = v.new_hosts = v.old_hosts = v.rollout_hosts;
  const std::string server = server_of(servers, spec);
  nlohmann::json out = nlohmann::json::array();
  for (uint32_t i = 0; i < spec.queries.size(); ++i) {
    QueryJob job = make_job(spec, i, v, server);
    measure(q, job);
    const auto j = rollout::judge(spec.queries[i], job.m);
    nlohmann::json o = {{"name", spec.queries[i].name},
                        {"query", job.m.promql},
                        {"threshold", spec.queries[i].threshold},
                        {"verdict", rollout::verdict_name(j.verdict)},
                        {"sentence", j.sentence}};
    o["value"] = job.m.value && std::isfinite(*job.m.value) ? nlohmann::json(*job.m.value) : nlohmann::json();
    if (job.compare)
      o["baseline"] =
          job.m.baseline && std::isfinite(*job.m.baseline) ? nlohmann::json(*job.m.baseline) : nlohmann::json();
    if (!job.m.error.empty()) o["error"] = job.m.error;
    o["invalid"] = job.invalid;
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace gantry::coordinator::analysis
