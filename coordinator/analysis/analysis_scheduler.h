// Runs the metric analysis of active rollouts. Each turn of the coordinator's loop it applies
// the evaluations that finished (as EvAnalysis steps through the rollout executor: persisted,
// recorded, decided by the pure state machine) and starts the ones the rollouts' states say are
// due, with their templates filled in from the rollout and the hosts' labels. The queries
// themselves run on a QueryRunner's thread, so a slow or dead Prometheus never stalls the loop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/util/clock.h"
#include "coordinator/analysis/prometheus_client.h"
#include "coordinator/analysis/query_template.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/rollout/state_machine.h"
#include "coordinator/server/metrics.h"

namespace gantry::coordinator {
class RolloutExecutor;
}

namespace gantry::coordinator::analysis {

// One evaluation to take: the measurement as far as the scheduler knows it (query, gate, time,
// query text) and what to ask.
struct QueryJob {
  uint64_t rollout_id = 0;
  rollout::Measurement m;
  std::string server;            // base URL; "" when the plan names no configured server
  std::string canary, baseline;  // rendered PromQL; baseline only for comparisons
  bool compare = false;
  bool invalid = false;  // the query itself is wrong (template, or Prometheus refused it): a plan error
};

// Where jobs run. take_done() returns the measurements finished since the last call.
class QueryRunner {
 public:
  virtual ~QueryRunner() = default;
  virtual void submit(QueryJob job) = 0;
  virtual std::vector<QueryJob> take_done() = 0;
};

// Takes a job's measurement (value, baseline or error) through `q`. Used by the runners.
void measure(PromQuerier& q, QueryJob& job);

// One worker thread; jobs beyond 256 waiting are answered at once as inconclusive.
class ThreadedQueryRunner : public QueryRunner {
 public:
  explicit ThreadedQueryRunner(PromQuerier& q);
  ~ThreadedQueryRunner() override;
  void submit(QueryJob job) override;
  std::vector<QueryJob> take_done() override;

 private:
  void run();
  PromQuerier& querier_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<QueryJob> todo_;
  std::vector<QueryJob> done_;
  bool stop_ = false;
  std::thread worker_;
};

// The template variables of rollout `s` for gate batch `gate` (-1: the current batch), hosts
// mapped to instances through `instance_label` (the host id where a host lacks it or the label
// is unset; a value no query may hold is left out).
TemplateVars template_vars(const rollout::State& s, const fleet::Registry& reg, int gate);

class AnalysisScheduler {
 public:
  // `servers`: name -> base URL, from the coordinator's --prometheus.
  // `now`: decision time, the base the rollout steps measure time in.
  AnalysisScheduler(RolloutExecutor& exec, const fleet::Registry& reg, QueryRunner& runner, Metrics& metrics,
                    std::map<std::string, std::string> servers, std::function<Millis()> now);
  // Applies finished evaluations, then starts the due ones.
  void tick();
  // The earliest decision time a query falls due (0: none), for the loop's poll timeout.
  Millis next_due() const;
  // What a plan's queries are worth now, for `gantry rollout plan`: each rendered for the
  // selected hosts (all of them as the batch and the old version's; none yet on the new one)
  // and run once, synchronously through `q`. One JSON object per query.
  static nlohmann::json preview(const rollout::AnalysisSpec& spec, const std::string& service,
                                const std::vector<rollout::HostCandidate>& hosts,
                                const std::map<std::string, std::string>& servers, PromQuerier& q);

 private:
  RolloutExecutor& exec_;
  const fleet::Registry& reg_;
  QueryRunner& runner_;
  Metrics& metrics_;
  std::map<std::string, std::string> servers_;
  std::function<Millis()> now_;
  std::set<std::pair<uint64_t, uint32_t>> running_;  // (rollout, query) being measured
};

}  // namespace gantry::coordinator::analysis
