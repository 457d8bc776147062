#include "coordinator/server/metrics.h"

#include "common/transport/udp_heartbeat.h"

#include <chrono>
#include <sstream>

#include "common/protocol/messages.h"
#include "common/version.h"

namespace gantry::coordinator {

void Histogram::observe(double s) {
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (s <= kBuckets[i]) counts[i]++;
  }
  count++;
  sum += s;
}

void Metrics::observe_timing(const std::string& phase, uint64_t ms) {
  static const char* kKnown[] = {"fetch", "stage", "swap", "restart", "verify", "total"};
  for (const char* k : kKnown) {
    if (phase == k) {
      phase_seconds[phase].observe(static_cast<double>(ms) / 1000.0);
      return;
    }
  }
}

namespace {
// When this process started (static initialisation runs before main), for process_start_time_seconds.
const double kProcessStart = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

void counter(std::ostringstream& o, const char* name, const char* help, uint64_t v) {
  o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n" << name << ' ' << v << '\n';
}
std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}
}  // namespace

std::string render_metrics(const Metrics& m, const fleet::Registry& reg,
                           const std::vector<const rollout::State*>& active) {
  std::ostringstream o;
  // Sums and bucket bounds are doubles: enough digits that a scraper sees the exact value.
  o.precision(12);
  o << "# HELP gantry_build_info The running coordinator's version and wire protocol; always 1.\n# TYPE "
       "gantry_build_info gauge\n";
  o << "gantry_build_info{version=\"" << esc(kGantryVersion) << "\",protocol=\"" << proto::kProtocolVersion
    << "\"} 1\n";
  o << "# HELP process_start_time_seconds Start time of the process since the Unix epoch, in seconds.\n"
       "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds "
    << static_cast<uint64_t>(kProcessStart) << '\n';
  uint64_t online = 0, unknown = 0;
  for (const auto& [id, h] : reg.hosts()) (h.online ? online : unknown)++;
  o << "# HELP gantry_hosts Hosts known to the coordinator, by state.\n# TYPE gantry_hosts gauge\n";
  o << "gantry_hosts{state=\"online\"} " << online << "\ngantry_hosts{state=\"unknown\"} " << unknown << '\n';
  // A host whose SUB is down hears no abort or rollback Signal (its orders still reach it).
  std::map<std::string, uint64_t> signals{{"up", 0}, {"down", 0}, {"unknown", 0}};
  for (const auto& [id, h] : reg.hosts())
    if (h.online) signals[fleet::Registry::signal_channel(h)]++;
  o << "# HELP gantry_hosts_signal_channel Online hosts by the state of their signal channel (the agent's SUB), as "
       "their agents report it; unknown: not reported (an older agent).\n# TYPE gantry_hosts_signal_channel gauge\n";
  for (const char* st : {"up", "down", "unknown"})
    o << "gantry_hosts_signal_channel{state=\"" << st << "\"} " << signals[st] << '\n';

  // How many hosts run each release of each service: the fleet's version spread at a glance.
  std::map<std::pair<std::string, std::string>, uint64_t> versions;
  for (const auto& [id, h] : reg.hosts()) {
    for (const auto& [svc, v] : h.services) versions[{svc, v.current_version}]++;
  }
  o << "# HELP gantry_service_hosts Hosts running each release of each service (version \"\" = nothing installed).\n"
       "# TYPE gantry_service_hosts gauge\n";
  for (const auto& [k, n] : versions) {
    o << "gantry_service_hosts{service=\"" << esc(k.first) << "\",version=\"" << esc(k.second) << "\"} " << n << '\n';
  }

  std::map<std::string, uint64_t> by_phase;
  for (const auto* s : active) by_phase[rollout::phase_name(s->phase)]++;
  o << "# HELP gantry_rollouts_active Rollouts not yet ended, by phase.\n# TYPE gantry_rollouts_active gauge\n";
  for (const char* p : {"running", "paused", "rolling_back"})
    o << "gantry_rollouts_active{phase=\"" << p << "\"} " << by_phase[p] << '\n';
  o << "# HELP gantry_rollouts_ended_total Rollouts ended since start, by final phase.\n# TYPE "
       "gantry_rollouts_ended_total counter\n";
  for (const char* p : {"succeeded", "failed", "rolled_back", "aborted"}) {
    auto it = m.rollouts_ended.find(p);
    o << "gantry_rollouts_ended_total{phase=\"" << p << "\"} " << (it == m.rollouts_ended.end() ? 0 : it->second)
      << '\n';
  }
  o << "# HELP gantry_rollout_info Each active rollout's target version and phase; always 1.\n# TYPE "
       "gantry_rollout_info gauge\n";
  for (const auto* s : active) {
    o << "gantry_rollout_info{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\",version=\""
      << esc(s->version) << "\",phase=\"" << rollout::phase_name(s->phase) << "\"} 1\n";
  }
  o << "# HELP gantry_rollout_batch Current batch (1-based) of each active rollout.\n# TYPE gantry_rollout_batch "
       "gauge\n";
  for (const auto* s : active) {
    o << "gantry_rollout_batch{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\"} "
      << s->current_batch + 1 << '\n';
  }
  o << "# HELP gantry_rollout_batches Number of batches of each active rollout.\n# TYPE gantry_rollout_batches gauge\n";
  for (const auto* s : active) {
    o << "gantry_rollout_batches{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\"} "
      << s->batches.size() << '\n';
  }
  o << "# HELP gantry_rollout_hosts Hosts of each active rollout, by state.\n# TYPE gantry_rollout_hosts gauge\n";
  for (const auto* s : active) {
    auto c = rollout::count(*s);
    std::pair<const char*, uint32_t> kv[] = {{"pending", c.pending},         {"ordered", c.ordered},
                                             {"healthy", c.healthy},         {"failed", c.failed},
                                             {"unknown", c.unknown},         {"rolling_back", c.rolling_back},
                                             {"rolled_back", c.rolled_back}, {"rollback_failed", c.rollback_failed},
                                             {"skipped", c.skipped}};
    for (auto& [k, v] : kv) {
      o << "gantry_rollout_hosts{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\",state=\"" << k
        << "\"} " << v << '\n';
    }
  }
  // Desired state (coordinator/server/convergence.h): hosts off their service's desired release.
  o << "# HELP gantry_hosts_drifted Hosts whose service's desired state names another release than they run.\n"
       "# TYPE gantry_hosts_drifted gauge\n";
  for (const auto& [service, n] : m.drifted_hosts)
    o << "gantry_hosts_drifted{service=\"" << service << "\"} " << n << '\n';
  // Metric analysis (coordinator/rollout/analysis.h): every evaluation by verdict, and each
  // active rollout's queries as last evaluated.
  o << "# HELP gantry_analysis_evaluations_total Metric analysis evaluations taken, by verdict.\n# TYPE "
       "gantry_analysis_evaluations_total counter\n";
  for (const char* v : {"pass", "fail", "inconclusive", "not_applicable"}) {
    auto it = m.analysis_evaluations.find(v);
    o << "gantry_analysis_evaluations_total{verdict=\"" << v << "\"} "
      << (it == m.analysis_evaluations.end() ? 0 : it->second) << '\n';
  }
  o << "# HELP gantry_analysis_value Last value of each analysis query of each active rollout (a comparison's "
       "ratio or difference).\n# TYPE gantry_analysis_value gauge\n";
  const auto each_query = [&](const char* name, auto&& line) {
    for (const auto* s : active) {
      const auto& spec = s->plan.analysis;
      for (size_t i = 0; i < spec.queries.size() && i < s->analysis.queries.size(); ++i) {
        if (s->analysis.queries[i].evaluations == 0) continue;
        o << name << "{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\",query=\""
          << esc(spec.queries[i].name) << "\"";
        line(s->analysis.queries[i]);
      }
    }
  };
  each_query("gantry_analysis_value", [&](const rollout::QueryProgress& q) {
    const auto v = q.compared ? q.compared : q.value;
    o << "} " << (v ? rollout::fmt_value(*v) : std::string("NaN")) << '\n';
  });
  o << "# HELP gantry_analysis_verdict Last verdict of each analysis query of each active rollout; 1 for the verdict "
       "it had.\n# TYPE gantry_analysis_verdict gauge\n";
  each_query("gantry_analysis_verdict", [&](const rollout::QueryProgress& q) {
    o << ",verdict=\"" << rollout::verdict_name(q.last_verdict) << "\"} 1\n";
  });
  o << "# HELP gantry_analysis_consecutive_failures Failing evaluations in a row of each analysis query of each "
       "active rollout.\n# TYPE gantry_analysis_consecutive_failures gauge\n";
  each_query("gantry_analysis_consecutive_failures",
             [&](const rollout::QueryProgress& q) { o << "} " << q.consecutive_failures << '\n'; });
  counter(o, "gantry_orders_sent_total", "Orders sent to agents, including resends.", m.orders_sent);
  counter(o, "gantry_orders_acked_total", "Orders acknowledged by agents.", m.orders_acked);
  counter(o, "gantry_orders_retried_total", "Orders resent because no acknowledgement came.", m.orders_retried);
  counter(o, "gantry_broadcasts_total", "Fleet-wide signals published.", m.broadcasts);
  counter(o, "gantry_messages_received_total", "Messages received from agents and operators.", m.messages_in);
  counter(o, "gantry_messages_sent_total", "Messages sent to agents.", m.messages_out);
  counter(o, "gantry_decode_errors_total", "Messages refused because they did not decode or validate.",
          m.decode_errors);
  counter(o, "gantry_hellos_total", "Hello messages accepted from agents.", m.hellos);
  counter(o, "gantry_auth_refused_total", "Messages and operator commands refused by key standing or role.",
          m.auth_refused);
  counter(o, "gantry_zap_denied_total",
          "CURVE handshakes refused by the ZAP handler (unknown, rejected or revoked keys).", m.zap_denied);
  counter(o, "gantry_handler_errors_total",
          "Messages dropped because their handler failed (logged; the loop kept serving).", m.handler_errors);
  counter(o, "gantry_hosts_lost_total", "Times a host became unknown after missing heartbeats.", m.hosts_lost);
  counter(o, "gantry_artifact_bytes_sent_total", "Release bytes sent to agents.", m.chunk_bytes);
  o << "# HELP gantry_peer_artifact_fetches_total Artifacts this coordinator lacked, fetched from a peer "
       "coordinator, by outcome.\n"
       "# TYPE gantry_peer_artifact_fetches_total counter\n"
    << "gantry_peer_artifact_fetches_total{outcome=\"ok\"} " << m.peer_fetches_ok << "\n"
    << "gantry_peer_artifact_fetches_total{outcome=\"failed\"} " << m.peer_fetches_failed << "\n";
  counter(o, "gantry_peer_artifact_bytes_total", "Bytes of the artifacts fetched from peer coordinators.",
          m.peer_fetch_bytes);
  counter(o, "gantry_udp_heartbeats_total", "Heartbeat datagrams accepted from agents (UDP).", m.udp_heartbeats);
  counter(o, "gantry_udp_heartbeats_sent_total", "The coordinator's own heartbeats sent to agents as datagrams (UDP).",
          m.udp_heartbeats_sent);
  o << "# HELP gantry_udp_heartbeats_rejected_total Heartbeat datagrams dropped, by reason (size, magic, "
       "unknown_session, mac, replay).\n"
       "# TYPE gantry_udp_heartbeats_rejected_total counter\n";
  for (size_t r = 1; r < m.udp_rejected.size(); ++r) {
    o << "gantry_udp_heartbeats_rejected_total{reason=\""
      << transport::udp_hb::reject_name(static_cast<transport::udp_hb::Reject>(r)) << "\"} " << m.udp_rejected[r]
      << '\n';
  }
  o << "# HELP gantry_reports_total Order results reported by agents, by outcome.\n# TYPE gantry_reports_total "
       "counter\n";
  for (const char* k : {"succeeded", "failed_reverted", "failed"}) {
    auto it = m.reports.find(k);
    o << "gantry_reports_total{outcome=\"" << k << "\"} " << (it == m.reports.end() ? 0 : it->second) << '\n';
  }
  // Agents time every order by phase; "swap" is the atomic symlink switch and "verify" the
  // probes until healthy, the two durations operators ask about first.
  const char* hist = "gantry_agent_phase_duration_seconds";
  o << "# HELP " << hist
    << " How long each phase of an order took on the agent (fetch, stage, swap, restart, verify, total).\n"
    << "# TYPE " << hist << " histogram\n";
  for (const char* phase : {"fetch", "stage", "swap", "restart", "verify", "total"}) {
    auto it = m.phase_seconds.find(phase);
    Histogram h = it == m.phase_seconds.end() ? Histogram{} : it->second;
    for (size_t i = 0; i < Histogram::kBuckets.size(); ++i) {
      o << hist << "_bucket{phase=\"" << phase << "\",le=\"" << Histogram::kBuckets[i] << "\"} " << h.counts[i] << '\n';
    }
    o << hist << "_bucket{phase=\"" << phase << "\",le=\"+Inf\"} " << h.count << '\n';
    o << hist << "_sum{phase=\"" << phase << "\"} " << h.sum << '\n';
    o << hist << "_count{phase=\"" << phase << "\"} " << h.count << '\n';
  }
  return o.str();
}

}  // namespace gantry::coordinator
