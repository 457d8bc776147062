#include "coordinator/server/metrics.h"

#include <sstream>

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

std::string render_metrics(const Metrics& m, const fleet::Registry& reg, const std::vector<const rollout::State*>& active) {
  std::ostringstream o;
  uint64_t online = 0, unknown = 0;
  for (const auto& [id, h] : reg.hosts()) (h.online ? online : unknown)++;
  o << "# HELP gantry_hosts Hosts known to the coordinator, by state.\n# TYPE gantry_hosts gauge\n";
  o << "gantry_hosts{state=\"online\"} " << online << "\ngantry_hosts{state=\"unknown\"} " << unknown << '\n';

  std::map<std::string, uint64_t> by_phase;
  for (const auto* s : active) by_phase[rollout::phase_name(s->phase)]++;
  o << "# HELP gantry_rollouts_active Rollouts not yet ended, by phase.\n# TYPE gantry_rollouts_active gauge\n";
  for (const char* p : {"running", "paused", "rolling_back"}) o << "gantry_rollouts_active{phase=\"" << p << "\"} " << by_phase[p] << '\n';
  o << "# HELP gantry_rollouts_ended_total Rollouts ended since start, by final phase.\n# TYPE gantry_rollouts_ended_total counter\n";
  for (const char* p : {"succeeded", "failed", "rolled_back", "aborted"}) {
    auto it = m.rollouts_ended.find(p);
    o << "gantry_rollouts_ended_total{phase=\"" << p << "\"} " << (it == m.rollouts_ended.end() ? 0 : it->second) << '\n';
  }
  o << "# HELP gantry_rollout_batch Current batch (1-based) of each active rollout.\n# TYPE gantry_rollout_batch gauge\n";
  for (const auto* s : active) {
    o << "gantry_rollout_batch{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\"} " << s->current_batch + 1 << '\n';
  }
  o << "# HELP gantry_rollout_batches Number of batches of each active rollout.\n# TYPE gantry_rollout_batches gauge\n";
  for (const auto* s : active) {
    o << "gantry_rollout_batches{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\"} " << s->batches.size() << '\n';
  }
  o << "# HELP gantry_rollout_hosts Hosts of each active rollout, by state.\n# TYPE gantry_rollout_hosts gauge\n";
  for (const auto* s : active) {
    auto c = rollout::count(*s);
    std::pair<const char*, uint32_t> kv[] = {{"pending", c.pending}, {"ordered", c.ordered}, {"healthy", c.healthy},
                                             {"failed", c.failed}, {"unknown", c.unknown}, {"rolling_back", c.rolling_back},
                                             {"rolled_back", c.rolled_back}, {"rollback_failed", c.rollback_failed},
                                             {"skipped", c.skipped}};
    for (auto& [k, v] : kv) {
      o << "gantry_rollout_hosts{rollout=\"" << s->id << "\",service=\"" << esc(s->service) << "\",state=\"" << k << "\"} " << v << '\n';
    }
  }
  counter(o, "gantry_orders_sent_total", "Orders sent to agents, including resends.", m.orders_sent);
  counter(o, "gantry_orders_acked_total", "Orders acknowledged by agents.", m.orders_acked);
  counter(o, "gantry_orders_retried_total", "Orders resent because no acknowledgement came.", m.orders_retried);
  counter(o, "gantry_broadcasts_total", "Fleet-wide signals published.", m.broadcasts);
  counter(o, "gantry_messages_received_total", "Messages received from agents and operators.", m.messages_in);
  counter(o, "gantry_messages_sent_total", "Messages sent to agents.", m.messages_out);
  counter(o, "gantry_decode_errors_total", "Messages refused because they did not decode or validate.", m.decode_errors);
  counter(o, "gantry_hellos_total", "Hello messages accepted from agents.", m.hellos);
  counter(o, "gantry_hosts_lost_total", "Times a host became unknown after missing heartbeats.", m.hosts_lost);
  counter(o, "gantry_artifact_bytes_sent_total", "Release bytes sent to agents.", m.chunk_bytes);
  o << "# HELP gantry_reports_total Order results reported by agents, by outcome.\n# TYPE gantry_reports_total counter\n";
  for (const char* k : {"succeeded", "failed_reverted", "failed"}) {
    auto it = m.reports.find(k);
    o << "gantry_reports_total{outcome=\"" << k << "\"} " << (it == m.reports.end() ? 0 : it->second) << '\n';
  }
  o << "# HELP gantry_agent_phase_seconds Durations agents report for each phase of an order.\n# TYPE gantry_agent_phase_seconds histogram\n";
  for (const char* phase : {"fetch", "stage", "swap", "restart", "verify", "total"}) {
    auto it = m.phase_seconds.find(phase);
    Histogram h = it == m.phase_seconds.end() ? Histogram{} : it->second;
    for (size_t i = 0; i < Histogram::kBuckets.size(); ++i) {
      o << "gantry_agent_phase_seconds_bucket{phase=\"" << phase << "\",le=\"" << Histogram::kBuckets[i] << "\"} " << h.counts[i] << '\n';
    }
    o << "gantry_agent_phase_seconds_bucket{phase=\"" << phase << "\",le=\"+Inf\"} " << h.count << '\n';
    o << "gantry_agent_phase_seconds_sum{phase=\"" << phase << "\"} " << h.sum << '\n';
    o << "gantry_agent_phase_seconds_count{phase=\"" << phase << "\"} " << h.count << '\n';
  }
  return o.str();
}

const std::string& status_page_html() {
  static const std::string kPage = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gantry</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} .tiles{display:flex;flex-wrap:wrap;gap:6px}
.tile{width:150px;padding:6px;border-radius:6px;background:#ddd;font-size:12px}
.healthy,.online{background:#b8e6b8}.failed,.rollback_failed{background:#f3b0b0}.unknown{background:#f5d98b}
.ordered,.rolling_back{background:#b8d4f3}.rolled_back{background:#d9c8f0}.pending,.skipped{background:#eee}
progress{width:320px} #events{font-family:monospace;font-size:12px;white-space:pre-wrap}
</style></head><body>
<h1>Gantry fleet</h1>
<div id="rollout">loading…</div>
<h2>Hosts</h2><div class="tiles" id="hosts"></div>
<h2>Recent events</h2><div id="events"></div>
<script>
async function refresh(){
  try{
    const s=await (await fetch('/status',{cache:'no-store'})).json();
    const r=(s.rollouts||[])[0];
    let html='No rollout yet.';
    const byHost={};
    if(r){
      const c=r.counts, done=c.healthy+c.failed+c.unknown+c.rolled_back+c.rollback_failed+c.skipped;
      html=`<b>Rollout ${r.id}</b>: ${r.service} → ${r.version} — <b>${r.phase}</b>`+
        ` — batch ${r.batch} of ${r.batches_total}<br><progress max="${c.total}" value="${done}"></progress> `+
        `healthy ${c.healthy} · failed ${c.failed} · unknown ${c.unknown} · pending ${c.pending} · in flight ${c.ordered}`+
        (r.end_reason?`<br>${r.end_reason}`:'');
      for(const h of r.hosts) byHost[h.host_id]=h;
    }
    document.getElementById('rollout').innerHTML=html;
    document.getElementById('hosts').innerHTML=(s.hosts||[]).map(h=>{
      const rh=byHost[h.host_id]; const st=rh?rh.state:h.state;
      const v=(h.services||[]).map(x=>`${x.name} ${x.current_version||'-'}`).join(', ');
      return `<div class="tile ${st}"><b>${h.host_id}</b><br>${st}<br>${v}</div>`;}).join('');
    document.getElementById('events').textContent=(r&&r.events?r.events:[]).map(e=>e.message).join('\n');
  }catch(e){document.getElementById('rollout').textContent='coordinator unreachable: '+e;}
}
refresh(); setInterval(refresh,1000);
</script></body></html>
)html";
  return kPage;
}

}  // namespace gantry::coordinator
