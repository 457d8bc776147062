#include "coordinator/http/status_page.h"

namespace gantry::coordinator {

// Everything from /status and /rollouts reaches innerHTML only through esc(): host ids, versions,
// reasons and messages come from agents and operators. Fields a coordinator may not send (a
// per-host `timeline`; a host's `drift` and `desired`; a rollout's `analysis`; `desired_versions`)
// are drawn when present and skipped when absent.
const std::string& status_page_html() {
  static const std::string kPage = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gantry</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
:root{--bg:#fafafa;--fg:#1d1d1f;--muted:#6b6b70;--card:#fff;--line:#e2e2e6;
--pending:#dcdce0;--ordered:#b6d3f2;--draining:#8fb8ea;--swapping:#5b93d9;--verifying:#4fb3bf;
--healthy:#4caf6a;--failed:#d9423b;--unknown:#f0b429;--rolling_back:#b994e3;--rolled_back:#7d55c7;
--rollback_failed:#8c1d18;--skipped:#eeeeee}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.3em 1em;padding:.8em 1.2em;background:#22252b;color:#fff}
header h1{font-size:1.15em;margin:0} header #summary{color:#c9ccd3;font-size:.92em}
#stale{display:none;background:#f3d0ce;color:#5b1410;padding:.4em 1.2em}
main{padding:.8em 1.2em;max-width:1400px}
h2{font-size:1.05em;margin:1.2em 0 .5em}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8em 1em;margin-bottom:1em}
.title{display:flex;flex-wrap:wrap;gap:.3em .8em;align-items:baseline}
.title b{font-size:1.05em}
.badge{display:inline-block;padding:0 .5em;border-radius:9px;font-size:.85em;background:var(--pending)}
.badge.running{background:var(--ordered)}.badge.paused{background:var(--unknown)}.badge.rolling_back{background:var(--rolling_back)}
.badge.succeeded{background:var(--healthy);color:#fff}.badge.failed,.badge.aborted{background:var(--failed);color:#fff}
.badge.rolled_back{background:var(--rolled_back);color:#fff}
.muted{color:var(--muted);font-size:.9em}
.facts{display:flex;flex-wrap:wrap;gap:.2em 1.2em;margin:.4em 0}
.budget{display:flex;align-items:center;gap:.6em;flex-wrap:wrap;margin:.3em 0}
.meter{width:180px;height:10px;border-radius:5px;background:var(--pending);overflow:hidden;display:inline-block}
.meter i{display:block;height:100%;background:var(--unknown)} .meter.spent i{background:var(--failed)}
.pause{margin:.2em 0 .5em 5.5em;font-size:.88em;color:var(--muted);border-top:1px dashed var(--line);padding-top:.2em}
.pause.now{color:#7a4b00;background:#fff3d6;border:1px solid var(--unknown);border-radius:6px;padding:.3em .6em}
.batch{display:flex;gap:.6em;align-items:flex-start;margin:.25em 0}
.blabel{flex:0 0 5em;font-size:.85em;color:var(--muted);padding-top:.15em}
.blabel.current{color:var(--fg);font-weight:600}
.cells{display:flex;flex-wrap:wrap;gap:3px;flex:1;min-width:0}
.tile{border-radius:4px;background:var(--pending);cursor:pointer;font-size:12px;padding:2px 6px;
 white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:11em;border:2px solid transparent}
.small .tile{width:14px;height:14px;padding:0;font-size:0;max-width:none;flex:none}
.tile.sel{border-color:#111}
.pending{background:var(--pending)}.ordered{background:var(--ordered)}.draining{background:var(--draining)}
.swapping{background:var(--swapping);color:#fff}.verifying{background:var(--verifying)}.healthy{background:var(--healthy);color:#fff}
.failed{background:var(--failed);color:#fff}.unknown{background:var(--unknown)}.rolling_back{background:var(--rolling_back)}
.rolled_back{background:var(--rolled_back);color:#fff}.rollback_failed{background:var(--rollback_failed);color:#fff}
.skipped{background:var(--skipped);color:var(--muted)}
.agg{flex:1;min-width:0}
.bar{display:flex;height:18px;border-radius:4px;overflow:hidden;background:var(--pending)}
.bar span{display:block;height:100%;cursor:pointer;min-width:2px}
.counts{font-size:.85em;color:var(--muted)}
.legend{display:flex;flex-wrap:wrap;gap:.3em .8em;font-size:.82em;color:var(--muted);margin:.5em 0}
.legend i{display:inline-block;width:.9em;height:.9em;border-radius:3px;vertical-align:-.1em;margin-right:.25em}
#detail{position:sticky;bottom:0;background:var(--card);border:1px solid var(--line);border-radius:8px;
 padding:.7em 1em;margin-bottom:1em;box-shadow:0 -2px 8px rgba(0,0,0,.06)}
#detail:empty{display:none}
#detail .close{float:right;cursor:pointer;border:0;background:none;font-size:1.2em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1em .8em;margin:.4em 0}
dt{color:var(--muted)} dd{margin:0;overflow-wrap:anywhere}
ol.tl{margin:.3em 0;padding-left:1.2em}
.events{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere;max-height:14em;overflow:auto}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:500}
tr.offline td{background:#fff6dc}tr.offline td:first-child{border-left:4px solid var(--unknown)}
td.reason{max-width:28em;overflow-wrap:anywhere}
.drift{background:#fff3d6;color:#7a4b00;border-radius:4px;padding:0 .3em;font-size:.85em}
.svc{display:flex;flex-wrap:wrap;gap:.4em;margin:.3em 0}
tr.drifted td:first-child{border-left:4px solid #e8a33d}
.analysis{display:flex;flex-wrap:wrap;gap:.4em;margin:.4em 0}
.verdict{border:1px solid var(--line);border-radius:6px;padding:.2em .6em;font-size:.88em;max-width:100%;overflow-wrap:anywhere}
.verdict.pass{border-color:var(--healthy);background:#e6f4ea}.verdict.fail{border-color:var(--failed);background:#fbe4e2}
.verdict.inconclusive{border-color:var(--unknown);background:#fff3d6}
.back{font-size:.9em;margin-left:auto}
.ver{border:1px solid var(--line);border-radius:6px;padding:.2em .6em;background:var(--card)}
a{color:#1f5fbf}
@media (max-width:640px){
 main{padding:.6em}.blabel{flex-basis:4.4em;white-space:nowrap}.pause{margin-left:0}
 #history table{min-width:640px}
 .tile{max-width:8em;font-size:11px}.meter{width:120px}
 th,td{padding:.2em .35em}
}
</style></head><body>
<header><h1>Gantry</h1><span id="summary">loading…</span></header>
<div id="stale"></div>
<main>
<section id="rollouts"></section>
<div id="detail"></div>
<h2>Rollouts</h2><div class="card scroll" id="history"></div>
<h2>Fleet</h2><div class="card" id="fleet"></div>
</main>
<script>
'use strict';
function esc(v){return String(v==null?'':v).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
const $=id=>document.getElementById(id);
const ACTIVE=['running','paused','rolling_back'];
// Agent phases (Progress) within an order, drawn as the step they belong to.
const PHASE_CLASS={fetching:'ordered',staging:'ordered',draining:'draining',waiting_inflight:'draining',
 swapping:'swapping',restarting:'swapping',verifying:'verifying',allowing_traffic:'verifying',
 traffic_allowed:'verifying',verifying_traffic:'verifying',reverting:'rolling_back'};
const LEGEND=[['pending','pending'],['ordered','ordered / fetching'],['draining','draining'],['swapping','swapping / restarting'],
 ['verifying','verifying'],['healthy','healthy'],['failed','failed'],['unknown','unknown'],['rolling_back','rolling back'],
 ['rolled_back','rolled back'],['rollback_failed','rollback failed'],['skipped','skipped']];
const NAMES_UP_TO=60, CELLS_UP_TO=300, FLEET_ROWS=300, POLL_MS=2000;
const HISTORY_MS=30000;
let data=null, selected=null, hashRollout=null;
// ETag of the /status we hold (an unchanged snapshot comes back 304, with no body); the rollout
// named in the address (#rollout=ID) as /rollouts/ID gave it, with its hosts and event log; the
// history (/rollouts).
let etag=null, viewed=null, history=null, historyAt=0, historyKey='';

function dur(ms){const s=Math.max(0,Math.round(ms/1000));if(s<120)return s+' s';const m=Math.floor(s/60);
 return m<120?m+' min '+(s%60)+' s':Math.floor(m/60)+' h '+(m%60)+' min';}
function when(ms){return ms>0?new Date(ms).toLocaleString():'';}
function ago(ms){return ms<0?'never':dur(ms)+' ago';}
// A plan amount (a count, or "N%" of total, rounded up as the coordinator does).
function amount(a,total){if(typeof a==='number')return a;
 if(typeof a==='string'&&/^\d+%$/.test(a))return Math.ceil(total*parseInt(a,10)/100);return null;}

// What to draw for one host of a rollout: its state there, refined by the phase its agent last
// reported for the same order.
function look(r,h,fleet){
 let cls=h.state, phase='';
 const fh=fleet[h.host_id];
 if(fh&&(h.state==='ordered'||h.state==='rolling_back')){
  const svc=(fh.services||[]).find(x=>x.name===r.service);
  if(svc&&svc.phase&&(!svc.order_id||!h.order_id||svc.order_id===h.order_id)){phase=svc.phase;
   if(h.state==='ordered')cls=PHASE_CLASS[phase]||'ordered';}
 }
 if(fh&&fh.online===false&&h.state==='pending')cls='unknown';
 return {cls,phase};
}

function budget(r){
 const c=r.counts||{}, p=r.plan||{}, total=c.total||0;
 const used=(c.failed||0)+(c.unknown||0)+(c.rollback_failed||0);
 const allowed=amount(p.max_failures,total);
 if(allowed==null)return `<div class="budget">failed or unknown: ${esc(used)}</div>`;
 const spent=used>allowed, left=Math.max(0,allowed-used);
 const pct=allowed>0?Math.min(100,100*used/allowed):(used>0?100:0);
 let per='';
 if(p.max_failures_per_batch!=null)per=` · per batch at most ${esc(p.max_failures_per_batch)}`;
 return `<div class="budget"><span>failure budget: <b>${esc(used)}</b> used of ${esc(allowed)} (${spent?'<b>spent</b>':esc(left)+' left'})${per}`+
  `${p.unknown_hosts==='wait'?' · unknown hosts count after '+esc(dur(p.unknown_wait||0)):''}</span>`+
  `<span class="meter${spent?' spent':''}"><i style="width:${pct.toFixed(1)}%"></i></span></div>`;
}

function tlText(tl){return (tl||[]).map(t=>String(t.phase||'').replace('_',' ')+(t.at_ms?' '+new Date(t.at_ms).toLocaleTimeString():'')).join(' → ');}

// Metric analysis (plan.analysis): each query's latest verdict, and the gate after a batch.
function analysisHtml(r){
 const a=r.analysis;
 if(a&&typeof a==='object'&&Array.isArray(a.queries)&&a.queries.length){
  let h=`<div class="analysis">`+a.queries.map(q=>{const v=String(q.verdict||'none');
   return `<span class="verdict ${esc(v)}" data-verdict="${esc(q.name)}"><b>${esc(q.name)}</b>: ${esc(v.replace('_',' '))}`+
    (q.value!=null?` · ${esc(q.value)}`:'')+(q.threshold?` (wants ${esc(q.threshold)})`:'')+
    (q.consecutive_failures?` · failing ${esc(q.consecutive_failures)} of ${esc(q.failure_limit)}`:'')+
    (q.message?`<br><span class="muted">${esc(q.message)}</span>`:'')+`</span>`;}).join('')+`</div>`;
  if(a.gate_batch!=null&&a.gate_batch>=0)h+=`<div class="muted">analysis gate after batch ${esc(a.gate_batch+1)}${a.gate_until>0?' judges evaluations from '+esc(new Date(a.gate_until).toLocaleTimeString()):''}${a.hold?' · <b>held: an evaluation was inconclusive</b>':''}</div>`;
  return h;
 }
 if(Array.isArray(r.verdicts))return `<div class="analysis">`+r.verdicts.map(v=>`<span class="verdict ${esc(v.result||v.verdict||'')}">${esc(v.name||'')}: ${esc(v.result||v.verdict||'')}</span>`).join('')+`</div>`;
 return '';
}

function batchesOf(r){
 const slots={}; for(const h of (r.hosts||[]))slots[h.host_id]=h;
 let rows=[];
 if(Array.isArray(r.batches)&&r.batches.length)rows=r.batches.map(ids=>ids.map(id=>slots[id]||{host_id:id,state:'pending'}));
 else for(const h of (r.hosts||[])){const b=h.batch>=0?h.batch:0;(rows[b]=rows[b]||[]).push(h);}
 return rows.map(x=>x||[]);
}

function cellsHtml(r,hosts,fleet,names){
 return hosts.map(h=>{const l=look(r,h,fleet);
  const tip=h.host_id+': '+(l.phase||h.state)+(h.message?' — '+h.message:'')+(Array.isArray(h.timeline)&&h.timeline.length?'\n'+tlText(h.timeline):'');
  const sel=selected&&selected.r===r.id&&selected.h===h.host_id;
  return `<div class="tile ${esc(l.cls)}" data-host="${esc(h.host_id)}" data-state="${esc(h.state)}" data-phase="${esc(l.phase)}"`+
   ` data-r="${esc(r.id)}" title="${esc(tip)}"${sel?' data-sel="1"':''}>${names?esc(h.host_id):''}</div>`;}).join('');
}

// Above CELLS_UP_TO hosts a batch is one bar of counts by state: 10,000 hosts stay readable.
function aggHtml(r,hosts,fleet){
 const n={}; for(const h of hosts){const c=look(r,h,fleet).cls;n[c]=(n[c]||0)+1;}
 const order=LEGEND.map(x=>x[0]).filter(k=>n[k]);
 return `<div class="agg"><div class="bar">`+order.map(k=>`<span class="${esc(k)}" data-agg="${esc(k)}" data-r="${esc(r.id)}" style="width:${(100*n[k]/hosts.length).toFixed(2)}%" title="${esc(k)}: ${esc(n[k])}"></span>`).join('')+
  `</div><div class="counts">`+order.map(k=>`${esc(k.replace('_',' '))} ${esc(n[k])}`).join(' · ')+`</div></div>`;
}

function rolloutHtml(r,fleet,full){
 const c=r.counts||{}, p=r.plan||{}, rows=batchesOf(r), total=c.total||0;
 const pauses=new Set(p.pause_after||[]);
 const names=total<=NAMES_UP_TO;
 const end=r.finished_at>0?r.finished_at:Date.now();
 let h=`<div class="card" id="r${esc(r.id)}"><div class="title"><b>Rollout ${esc(r.id)}: ${esc(r.service)} → ${esc(r.version)}</b>`+
  `<span class="badge ${esc(r.phase)}">${esc(String(r.phase).replace('_',' '))}</span>`+
  (r.kind&&r.kind!=='rollout'?`<span class="badge">${esc(r.kind)}</span>`:'')+
  (r.waiting_promote?`<span class="badge paused">waiting for promote</span>`:'')+
  (full?`<a class="back" href="#">all rollouts</a>`:`<a class="back" href="#rollout=${esc(r.id)}">event log</a>`)+`</div>`;
 h+=`<div class="facts muted"><span>by ${esc(r.created_by||'?')}</span><span>${esc(when(r.created_at))}</span>`+
  `<span>${r.finished_at>0?'took':'running for'} ${esc(dur(end-r.created_at))}</span>`+(r.reason?`<span>why: ${esc(r.reason)}</span>`:'')+`</div>`;
 h+=`<div class="facts"><span>batch ${esc(r.batch)} of ${esc(r.batches_total)}</span><span>healthy ${esc(c.healthy)} · failed ${esc(c.failed)} · `+
  `unknown ${esc(c.unknown)} · in progress ${esc(c.ordered)} · pending ${esc(c.pending)}`+
  ((c.rolled_back||0)+(c.rolling_back||0)+(c.rollback_failed||0)>0?` · rolling back ${esc(c.rolling_back)} · rolled back ${esc(c.rolled_back)} · rollback failed ${esc(c.rollback_failed)}`:'')+
  ((c.skipped||0)>0?` · skipped ${esc(c.skipped)}`:'')+`</span></div>`;
 h+=budget(r);
 if(r.end_reason)h+=`<div class="muted">${esc(r.end_reason)}</div>`;
 h+=analysisHtml(r);
 h+=`<div class="${names?'':'small'}">`;
 rows.forEach((hosts,i)=>{
  const cur=ACTIVE.includes(r.phase)&&i===r.batch-1;
  h+=`<div class="batch" data-batch="${i+1}"><div class="blabel${cur?' current':''}">batch ${i+1}<br><span class="muted">${esc(hosts.length)} host${hosts.length===1?'':'s'}</span></div>`+
   (hosts.length>CELLS_UP_TO?aggHtml(r,hosts,fleet):`<div class="cells">${cellsHtml(r,hosts,fleet,names)}</div>`)+`</div>`;
  if(pauses.has(i)&&i<rows.length-1){
   const now=r.waiting_promote&&i===r.batch-1;
   h+=`<div class="pause${now?' now':''}">${now?`paused after batch ${i+1}: waiting for promote (gantry rollout promote ${esc(r.id)})`:`canary pause: promote after batch ${i+1}`}</div>`;
  }
 });
 h+=`</div><div class="legend">`+LEGEND.map(([k,t])=>`<span><i class="${k}"></i>${t}</span>`).join('')+`</div>`;
 const ev=full&&Array.isArray(r.events)?r.events:(r.recent_events||[]).slice(-10);
 if(ev.length)h+=`<details${full||ACTIVE.includes(r.phase)?' open':''}><summary class="muted">${full?'event log ('+esc(ev.length)+(r.events_left_out?', '+esc(r.events_left_out)+' older left out':'')+')':'recent events'}</summary><div class="events" id="${full?'eventlog':''}">`+
  ev.map(e=>esc(new Date(e.at).toLocaleString()+'  '+e.message)).join('\n')+`</div></details>`;
 return h+`</div>`;
}

function detailHtml(fleet){
 if(!selected||!data)return '';
 const r=shownRollouts().find(x=>x.id===selected.r);
 const close=`<button class="close" title="close" data-close="1">×</button>`;
 if(selected.agg){
  if(!r)return '';
  const hs=(r.hosts||[]).filter(h=>look(r,h,fleet).cls===selected.agg);
  return close+`<b>${esc(hs.length)} hosts ${esc(selected.agg.replace('_',' '))}</b> in rollout ${esc(r.id)}<div class="cells">`+
   cellsHtml(r,hs.slice(0,200),fleet,true)+`</div>`+(hs.length>200?`<div class="muted">and ${esc(hs.length-200)} more</div>`:'');
 }
 const h=r&&(r.hosts||[]).find(x=>x.host_id===selected.h);
 const fh=fleet[selected.h];
 if(!h&&!fh)return '';
 const l=h?look(r,h,fleet):{cls:'',phase:''};
 const svc=fh&&r?(fh.services||[]).find(x=>x.name===r.service):null;
 let s=close+`<b>${esc(selected.h)}</b> `+(h?`<span class="badge ${esc(l.cls)}">${esc(h.state)}${l.phase?' · '+esc(l.phase):''}</span>`:'')+'<dl>';
 if(h){s+=`<dt>rollout</dt><dd>${esc(r.id)}: ${esc(r.service)} ${esc(h.from_version||'(none)')} → ${esc(r.version)}</dd>`+
  `<dt>batch</dt><dd>${esc(h.batch+1)}</dd>`+(h.domain?`<dt>domain</dt><dd>${esc(h.domain)}</dd>`:'')+
  `<dt>order</dt><dd>${esc(h.order_id||'—')}</dd><dt>last message</dt><dd>${esc(h.message||'—')}</dd>`;}
 if(fh){s+=`<dt>host</dt><dd>${fh.online?'online':'unknown'}, seen ${esc(ago(fh.last_seen_ms_ago))}, agent ${esc(fh.agent_version)}</dd>`+
  `<dt>labels</dt><dd>${esc(Object.entries(fh.labels||{}).map(([k,v])=>k+'='+v).join(' ')||'—')}</dd>`+
  `<dt>runs</dt><dd>${esc((fh.services||[]).map(x=>x.name+' '+(x.current_version||'-')+(x.previous_version?' (before: '+x.previous_version+')':'')).join(', ')||'—')}</dd>`;
  if(svc&&svc.phase)s+=`<dt>agent phase</dt><dd>${esc(svc.phase)}${svc.state?' ('+esc(svc.state)+')':''}</dd>`;}
 s+='</dl>';
 const tl=h&&Array.isArray(h.timeline)?h.timeline:null;
 if(tl&&tl.length)s+=`<div class="muted">timeline</div><ol class="tl">`+tl.map(t=>`<li>${esc(String(t.phase||'').replace('_',' '))} <span class="muted">${esc(t.at_ms?new Date(t.at_ms).toLocaleTimeString():'')}</span>${t.message?' — '+esc(t.message):''}</li>`).join('')+`</ol>`;
 const mine=r?(r.events||r.recent_events||[]).filter(e=>String(e.message).includes(selected.h)):[];
 if(mine.length)s+=`<div class="muted">events</div><div class="events">`+mine.map(e=>esc(new Date(e.at).toLocaleTimeString()+'  '+e.message)).join('\n')+`</div>`;
 return s;
}

function historyHtml(){
 const rs=(Array.isArray(history)?history:(data.rollouts||[])).slice().sort((a,b)=>b.created_at-a.created_at);
 if(!rs.length)return '<span class="muted">No rollouts yet.</span>';
 return `<table><thead><tr><th>#</th><th>service</th><th>version</th><th>result</th><th>who</th><th>why</th><th>started</th><th>took</th><th>how it ended</th></tr></thead><tbody>`+
  rs.map(r=>`<tr data-history="${esc(r.id)}"><td><a href="#rollout=${esc(r.id)}">${esc(r.id)}</a></td><td>${esc(r.service)}</td><td>${esc(r.version)}${r.kind&&r.kind!=='rollout'?' ('+esc(r.kind)+')':''}</td>`+
   `<td><span class="badge ${esc(r.phase)}">${esc(String(r.phase).replace('_',' '))}</span></td><td>${esc(r.created_by)}</td><td class="reason">${esc(r.reason)}</td>`+
   `<td>${esc(when(r.created_at))}</td><td>${r.finished_at>0?esc(dur(r.finished_at-r.created_at)):'…'}</td><td class="reason muted">${esc(r.end_reason||'')}</td></tr>`).join('')+
  `</tbody></table>`+(Array.isArray(history)?`<div class="muted">${esc(rs.length)} rollout(s), newest first; each links to its own view with its hosts, timelines and event log.</div>`:'<div class="muted">The latest rollout of each service (the history could not be read).</div>');
}

// Drift as the coordinator states it (its desired state per service: `desired` [{service,
// version, held, drifted_hosts}]; per host `drift`, `desired` and `drift_services` [{service,
// running, desired}]), when /status carries it; otherwise the page's own figure: a version other
// than the one the service's latest rollout made succeed, not while a rollout of it runs.
function fleetHtml(){
 const hosts=data.hosts||[], rs=data.rollouts||[];
 if(!hosts.length)return '<span class="muted">No hosts have connected yet.</span>';
 const want={}, busy=new Set();
 for(const r of rs){if(ACTIVE.includes(r.phase))busy.add(r.service);}
 const held={};
 if(Array.isArray(data.desired))for(const d of data.desired){if(d&&d.service){want[d.service]=d.version;if(d.held)held[d.service]=1;}}
 else for(const r of rs.slice().sort((a,b)=>a.created_at-b.created_at))if(r.phase==='succeeded')want[r.service]=r.version;
 const stated=hosts.some(h=>typeof h.drift==='boolean');
 // Whether service entry s of host h drifts, and what it should run.
 const drift=(h,s)=>{
  if(stated){
   if(Array.isArray(h.drift_services)){const x=h.drift_services.find(y=>y&&y.service===s.name);return {d:!!x,want:x?x.desired||'':''};}
   return {d:h.drift===true,want:h.drift===true&&typeof h.desired==='string'?h.desired:''};}
  return {d:!!(want[s.name]&&!busy.has(s.name)&&(s.current_version||'')!==want[s.name]),want:want[s.name]||''};
 };
 const hostDrifts=h=>stated?h.drift===true:(h.services||[]).some(s=>drift(h,s).d);
 const by={}, drifted={};
 for(const h of hosts)for(const s of (h.services||[])){const m=(by[s.name]=by[s.name]||{});const v=s.current_version||'(none)';
  const x=(m[v]=m[v]||{n:0,unknown:0,drift:0});x.n++;if(!h.online)x.unknown++;if(drift(h,s).d){x.drift++;drifted[s.name]=(drifted[s.name]||0)+1;}}
 let out='';
 for(const name of Object.keys(by).sort()){
  out+=`<div data-service="${esc(name)}"><b>${esc(name)}</b>${want[name]?` <span class="muted">${Array.isArray(data.desired)?'desired':'wants'} ${esc(want[name])}${held[name]?' (held)':''}${busy.has(name)?' (rollout under way)':''}</span>`:''}`+
   (drifted[name]?` <span class="drift">${esc(drifted[name])} drifted</span>`:'')+`<div class="svc">`+
   Object.entries(by[name]).sort((a,b)=>b[1].n-a[1].n).map(([v,x])=>`<span class="ver">${esc(v)}: <b>${esc(x.n)}</b>${x.unknown?` <span class="muted">(${esc(x.unknown)} unknown)</span>`:''}`+
    `${x.drift?` <span class="drift">drift${x.drift<x.n?' '+esc(x.drift):''}</span>`:''}</span>`).join('')+`</div></div>`;
 }
 // Unknown hosts first, then drifted ones, then by id.
 const rank=h=>h.online?(hostDrifts(h)?1:2):0;
 const sorted=hosts.slice().sort((a,b)=>rank(a)-rank(b)||String(a.host_id).localeCompare(String(b.host_id)));
 out+=`<div class="scroll"><table><thead><tr><th>host</th><th>state</th><th>runs</th><th>agent</th><th>last seen</th></tr></thead><tbody>`+
  sorted.slice(0,FLEET_ROWS).map(h=>{const hd=hostDrifts(h);
   return `<tr class="${h.online?'':'offline'}${hd?' drifted':''}" data-fleet-host="${esc(h.host_id)}" data-drift="${hd?1:0}"><td>${esc(h.host_id)}</td><td>${esc(h.state)}</td><td>`+
   ((h.services||[]).map(s=>{const d=drift(h,s);
    return `${esc(s.name)} ${esc(s.current_version||'-')}${d.d?` <span class="drift">drift${d.want?': wants '+esc(d.want):''}</span>`:''}`;}).join('<br>')||
    (hd?`<span class="drift">drift${typeof h.desired==='string'&&h.desired?': wants '+esc(h.desired):''}</span>`:''))+
   `</td><td>${esc(h.agent_version)}</td><td>${esc(ago(h.last_seen_ms_ago))}</td></tr>`;}).join('')+`</tbody></table></div>`;
 if(hosts.length>FLEET_ROWS)out+=`<div class="muted">${esc(FLEET_ROWS)} of ${esc(hosts.length)} hosts shown, unknown first, then drifted.</div>`;
 return out;
}

// The rollouts drawn now: the one the address names, else the active ones, else the latest.
function shownRollouts(){
 const rs=data.rollouts||[];
 if(hashRollout!=null){
  if(viewed&&viewed.id===hashRollout&&viewed.r)return [viewed.r];
  const c=rs.find(r=>String(r.id)===hashRollout);return c?[c]:[];
 }
 const act=rs.filter(r=>ACTIVE.includes(r.phase));
 if(act.length)return act;
 return rs.length?[rs.slice().sort((a,b)=>b.created_at-a.created_at)[0]]:[];
}

function render(){
 const hosts=data.hosts||[], rs=data.rollouts||[];
 const fleet={}; for(const h of hosts)fleet[h.host_id]=h;
 const online=hosts.filter(h=>h.online).length, act=rs.filter(r=>ACTIVE.includes(r.phase));
 $('summary').textContent=`${hosts.length} hosts, ${online} online, ${hosts.length-online} unknown; ${act.length} active rollout(s); updated ${new Date().toLocaleTimeString()}`;
 const show=shownRollouts(), full=hashRollout!=null;
 let head=full?'Rollout '+esc(hashRollout):act.length?'Active rollout'+(act.length>1?'s':''):'Last rollout';
 let body=show.map(r=>rolloutHtml(r,fleet,full)).join('');
 if(full&&!show.length)body=`<div class="card">${viewed&&viewed.id===hashRollout&&viewed.err?esc(viewed.err):'fetching…'} <a class="back" href="#">all rollouts</a></div>`;
 $('rollouts').innerHTML=show.length||full?`<h2>${head}</h2>`+body:'<h2>Rollouts</h2><div class="card muted">No rollouts yet.</div>';
 for(const t of document.querySelectorAll('.tile[data-sel]'))t.classList.add('sel');
 $('detail').innerHTML=detailHtml(fleet);
 $('history').innerHTML=historyHtml();
 $('fleet').innerHTML=fleetHtml();
}

// GET a JSON document; with `tag`, an unchanged one comes back as {same:true}.
async function getJson(url,tag){
 const res=await fetch(url,{cache:'no-store',headers:tag?{'If-None-Match':tag}:{}});
 if(res.status===304)return {same:true};
 if(res.status===404)throw new Error('not found');
 if(!res.ok)throw new Error('HTTP '+res.status);
 return {json:await res.json(),etag:res.headers.get('ETag')};
}

let timer=null;
async function refresh(){
 clearTimeout(timer);
 let changed=false;
 try{
  const s=await getJson('/status',etag);
  if(!s.same){data=s.json;etag=s.etag;changed=true;}
  $('stale').style.display='none';
 }catch(e){
  $('stale').textContent='coordinator unreachable ('+e.message+'); showing what it last said';
  $('stale').style.display='block';
  if(!data)$('summary').textContent='coordinator unreachable';
 }
 if(data){
  // The rollout the address names: once, and again at each poll while it is active.
  if(hashRollout!=null&&(!viewed||viewed.id!==hashRollout||(viewed.r&&ACTIVE.includes(viewed.r.phase)))){
   const id=hashRollout;
   try{const v=await getJson('/rollouts/'+id);viewed={id,r:v.json};}
   catch(e){if(!viewed||viewed.id!==id||!viewed.r)viewed={id,err:'rollout '+id+': '+e.message};}
   changed=true;
  }
  // The history: when a rollout started or ended, and every 30 s.
  const key=(data.rollouts||[]).map(r=>r.id+r.phase).join();
  if(key!==historyKey||Date.now()-historyAt>=HISTORY_MS){
   try{history=(await getJson('/rollouts')).json.rollouts;historyKey=key;historyAt=Date.now();changed=true;}catch(e){}
  }
  if(changed)render();
  else $('summary').textContent=$('summary').textContent.replace(/updated .*$/,'updated '+new Date().toLocaleTimeString());
 }
 // Every 2 s while the page is looked at; every 30 s in a background tab.
 timer=setTimeout(refresh,document.hidden?30000:POLL_MS);
}
function readHash(){const m=/^#rollout=(\d{1,18})$/.exec(location.hash);hashRollout=m?m[1]:null;}
document.addEventListener('click',e=>{
 const t=e.target.closest('[data-host],[data-agg],[data-close],[data-fleet-host]');
 if(!t)return;
 if(t.dataset.close)selected=null;
 else if(t.dataset.agg)selected={r:Number(t.dataset.r),agg:t.dataset.agg};
 else if(t.dataset.fleetHost){const r=data&&shownRollouts().concat(data.rollouts||[]).find(x=>(x.hosts||[]).some(h=>h.host_id===t.dataset.fleetHost));
  selected={r:r?r.id:null,h:t.dataset.fleetHost};}
 else selected={r:Number(t.dataset.r),h:t.dataset.host};
 if(data)render();
});
window.addEventListener('hashchange',()=>{readHash();selected=null;if(data){render();refresh();}});
document.addEventListener('visibilitychange',()=>{if(!document.hidden)refresh();});
readHash();
refresh();
</script></body></html>
)html";
  return kPage;
}

}  // namespace gantry::coordinator
