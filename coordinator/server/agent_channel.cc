#include "coordinator/server/agent_channel.h"

#include <algorithm>

#include "common/protocol/codec.h"
#include "common/util/log.h"

namespace gantry::coordinator {

namespace {
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
}  // namespace

AgentChannel::AgentChannel(Deps deps) : d_(deps) {}

bool AgentChannel::drain() {
  events_in_pass_ = false;
  bool emptied = false;
  for (int i = 0; i < kMaxMessagesPerPass; ++i) {
    bool dropped = false;
    auto in = transport::recv_routed(d_.socket, &dropped);
    if (dropped) {
      d_.metrics.decode_errors++;
      L()->warn("dropped an agent message with a bad frame layout");
      continue;
    }
    if (!in) {
      emptied = true;
      break;
    }
    if (proven_) proven_(in->source_fd);
    try {
      on_message(*in);
    } catch (const std::exception& e) {
      // Nothing an agent sends may stop the coordinator: that message is dropped.
      d_.metrics.handler_errors++;
      L()->error("message from agent connection {:?} dropped: its handler failed: {}", in->identity.substr(0, 64),
                 e.what());
    }
  }
  flush();
  return emptied;
}

void AgentChannel::flush() {
  if (!pending_hosts_.empty()) {
    std::vector<store::HostRow> rows;
    rows.reserve(pending_hosts_.size());
    for (auto& [id, row] : pending_hosts_) rows.push_back(std::move(row));
    pending_hosts_.clear();
    // The registry has them; the store is what a restarted coordinator starts from.
    if (auto s = d_.store.put_hosts(rows); !s.ok())
      L()->error("cannot record {} host(s) that said hello: {}", rows.size(), s.error().message);
  }
  d_.executor.flush_reports();
}

Millis AgentChannel::heartbeat_period(const fleet::HostRecord& h) const {
  if (h.coordinator_heartbeat && d_.cfg.coordinator_heartbeat_ms > 0)
    return std::max(d_.cfg.coordinator_heartbeat_ms, d_.cfg.heartbeat_interval_ms);
  return d_.cfg.heartbeat_interval_ms;
}

void AgentChannel::on_message(const transport::Incoming& in) {
  d_.metrics.messages_in++;
  // Anything but a greeted host's heartbeat (restored below) means the fleet is not at rest.
  const bool events_before = events_in_pass_;
  events_in_pass_ = true;
  // Authentication comes before decoding: the key (ZAP User-Id) is looked up in the current
  // allowlist on every message, so a revoked key stops at its next message.
  AgentStanding who;
  if (secure()) {
    who = d_.keys.agent(in.user_id);
    // Only accepted keys complete a handshake (ZAP); any other standing here is refused too.
    if (who.kind != AgentStanding::kAccepted) {
      d_.metrics.auth_refused++;
      d_.refusals.warn(in.user_id, "agent key " + (in.user_id.empty() ? std::string("(none)") : in.user_id) + " is " +
                                       who.state + (who.host_id.empty() ? "" : " (host " + who.host_id + ")") +
                                       "; message refused");
      return;
    }
  }
  auto msg = proto::decode(in.payload);
  if (!msg) {
    d_.metrics.decode_errors++;
    L()->warn("bad message from agent connection {:?}: {} ({})", in.identity.substr(0, 64), msg.error().message,
              msg.error().code);
    d_.sender.send(in.identity, proto::ErrorMsg{msg.error().code, msg.error().message, 0, ""});
    return;
  }
  Millis now = d_.clock.now_ms(), wall = d_.clock.wall_ms();
  // Fixed dispatch table by type; only hello is accepted before a host is known.
  if (auto* h = std::get_if<proto::Hello>(&*msg)) {
    // Host identity is the authenticated key: a hello naming another host is refused.
    if (secure() && h->host_id != who.host_id) {
      d_.metrics.auth_refused++;
      L()->warn("agent key {} is enrolled for host {} but its hello claims host {}: spoofed host id, refused",
                in.user_id, who.host_id, h->host_id);
      d_.sender.send(in.identity, proto::ErrorMsg{"identity", "host id does not match the host enrolled for this key",
                                                  static_cast<uint16_t>(proto::MsgType::kHello), ""});
      return;
    }
    on_hello(in.identity, *h);
    return;
  }
  fleet::HostRecord* touched = d_.registry.touch(in.identity, now, wall);
  if (!touched) {
    d_.sender.ask_for_hello(in.identity, now, proto::type_of(*msg));
    return;
  }
  fleet::HostRecord& host = *touched;
  if (secure() && host.host_id != who.host_id) {
    // The connection said hello as another host under a key since re-bound: start over.
    d_.refusals.warn(in.user_id, "connection of host " + host.host_id + " now speaks with the key of host " +
                                     who.host_id + "; refused");
    d_.sender.send(in.identity, proto::ErrorMsg{"hello_required", "say hello first",
                                                static_cast<uint16_t>(proto::type_of(*msg)), ""});
    return;
  }
  // A heartbeat changes only last_seen: it alone does not rebuild the status snapshot (that
  // costs tens of ms at 10,000 hosts); the loop refreshes a stale snapshot every few seconds.
  if (!std::holds_alternative<proto::Heartbeat>(*msg)) d_.changed.mark();
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, proto::Heartbeat>) {
          // Any traffic counts; nothing more to do, unless our datagrams do not reach it or
          // its signal channel changed (shown by hosts, /status and /metrics).
          events_in_pass_ = events_before;
          if (!m.signal_channel.empty() && m.signal_channel != host.signal_channel) {
            if (!host.signal_channel.empty() || m.signal_channel != "up")
              L()->info("{}: its signal channel (SUB) is {}", host.host_id, m.signal_channel);
            host.signal_channel = m.signal_channel;
            d_.changed.mark();
          }
          if (m.udp_deaf) {
            if (fleet::UdpSlot* slot = d_.registry.udp_slot(host.udp_session); slot && !slot->deaf) {
              slot->deaf = true;
              L()->info("{}: our heartbeat datagrams do not reach it; heartbeating it over its connection",
                        host.host_id);
            }
          }
        } else if constexpr (std::is_same_v<T, proto::OrderAck>) {
          d_.executor.ack(host.host_id, m.order_id);  // persisted within a heartbeat interval if still open
          if (m.status == "rejected") L()->warn("{} rejected order {}: {}", host.host_id, m.order_id, m.message);
        } else if constexpr (std::is_same_v<T, proto::FetchChunk>) {
          d_.artifacts.on_fetch(in.identity, m);
        } else if constexpr (std::is_same_v<T, proto::Progress>) {
          // The order names its service; the host's view of that service shows the phase until
          // the order's report (the Hello's service states are older than this order).
          const std::string service = d_.executor.open_order_service(m.order_id, host.host_id);
          for (auto& [name, svc] : host.services) {
            if (name == service || svc.order_id == m.order_id) {
              if (svc.state == "idle") svc.state = m.phase == "reverting" ? "reverting" : "updating";
              svc.order_id = m.order_id;
              svc.phase = m.phase;
              svc.phase_detail = m.detail;
            }
          }
          L()->debug("{} order {}: {} {}", host.host_id, m.order_id, m.phase, m.detail);
          d_.executor.progress(host.host_id, m);  // the host's timeline in its rollout
        } else if constexpr (std::is_same_v<T, proto::Report>) {
          on_report(host, m);
        } else if constexpr (std::is_same_v<T, proto::ErrorMsg>) {
          L()->warn("{} says error {}: {}", host.host_id, m.code, m.message);
        } else {
          L()->warn("{} sent a {} message, which agents may not send; ignored", host.host_id,
                    proto::type_name(proto::type_of(*msg)));
        }
      },
      *msg);
}

void AgentChannel::on_hello(const std::string& identity, const proto::Hello& h) {
  if (h.protocol_version != proto::kProtocolVersion) {
    L()->warn("{} speaks protocol {}, we speak {}; refused", h.host_id, h.protocol_version, proto::kProtocolVersion);
    d_.sender.send(identity, proto::ErrorMsg{"protocol_version", "unsupported protocol version",
                                             static_cast<uint16_t>(proto::MsgType::kHello), ""});
    return;
  }
  // Without CURVE the identity is the host id the agent set as its routing id; a hello
  // claiming another host's id from this connection is refused. (With CURVE the key decides,
  // checked by the caller, and routing ids are random.)
  if (!secure() && identity != h.host_id) {
    L()->warn("hello for host {} from connection {:?}: identity mismatch, refused", h.host_id, identity.substr(0, 64));
    d_.sender.send(identity, proto::ErrorMsg{"identity", "host id does not match the connection identity",
                                             static_cast<uint16_t>(proto::MsgType::kHello), ""});
    return;
  }
  Millis now = d_.clock.now_ms(), wall = d_.clock.wall_ms();
  d_.sender.hello_received(identity);
  bool was_offline = d_.registry.on_hello(h, identity, now, wall);
  d_.changed.mark();
  d_.metrics.hellos++;
  auto& rec = *d_.registry.find(h.host_id);
  store::HostRow row;
  row.host_id = h.host_id;
  row.labels = rec.labels;
  row.services = nlohmann::json::array();
  for (const auto& s : h.services)
    row.services.push_back(
        {{"name", s.name}, {"current_version", s.current_version}, {"previous_version", s.previous_version}});
  row.first_seen = rec.first_seen_wall;
  row.last_seen = wall;
  pending_hosts_[row.host_id] = std::move(row);  // persisted at the end of this pass (flush)
  L()->info("{} said hello ({}; {} service(s)){}", h.host_id, h.agent_version, h.services.size(),
            was_offline ? "" : " again");

  proto::Welcome w;
  w.heartbeat_interval_ms = d_.cfg.heartbeat_interval_ms;
  w.heartbeat_misses = d_.cfg.heartbeat_misses;
  w.epoch = d_.epoch;
  // Announced only to agents that said they honour it: an older agent would give us up after
  // misses x interval of silence and reconnect over and over.
  if (rec.coordinator_heartbeat && d_.cfg.coordinator_heartbeat_ms > 0)
    w.coordinator_heartbeat_ms = static_cast<uint32_t>(heartbeat_period(rec));
  d_.udp.offer(rec, h, w, now);
  d_.sender.send(identity, w);
  // Heartbeats spread over the period: hosts welcomed together (a restart's reconnect storm, a
  // fleet started at once) would otherwise all be due in the same tick, every period — a whole
  // fleet's datagrams in one burst of this loop, which an operator's command arriving then waits
  // behind. Each host's first heartbeat comes a fixed, host-dependent fraction of the period
  // early (never late); the later ones keep that phase.
  if (const Millis period = heartbeat_period(rec); period > static_cast<Millis>(d_.cfg.heartbeat_interval_ms))
    rec.last_sent -= static_cast<Millis>(std::hash<std::string>{}(h.host_id) %
                                         static_cast<uint64_t>(period - d_.cfg.heartbeat_interval_ms + 1));
  d_.executor.host_back(h, was_offline);
}

void AgentChannel::on_report(fleet::HostRecord& host, const proto::Report& r) {
  auto svc = host.services.find(r.service);
  if (svc != host.services.end()) {
    if (!r.running_version.empty() && r.running_version != svc->second.current_version) {
      svc->second.previous_version = svc->second.current_version;
    }
    svc->second.current_version = r.running_version;
    svc->second.state = "idle";
    svc->second.order_id.clear();
    svc->second.phase.clear();
  }
  if (!d_.executor.queue_report(host.host_id, r)) {
    L()->info("{} reported order {} ({}), which is not open; kept as information only", host.host_id, r.order_id,
              r.outcome);
    return;
  }
  d_.metrics.reports[r.outcome]++;
  for (const auto& [k, v] : r.timings_ms) d_.metrics.observe_timing(k, v);
}

void AgentChannel::heartbeat(Millis now) {
  // A heartbeat only to hosts that heard nothing from us for their period (the heartbeat
  // interval, or coordinator_heartbeat_ms for agents that announced support). Checked once
  // per interval, so a gap is at most period + interval, well inside misses x period.
  // The same bytes for every host: encoded once per tick, not once per host.
  std::string hb;
  for (fleet::HostRecord* hp : d_.registry.all()) {
    fleet::HostRecord& h = *hp;
    if (!h.online || !h.said_hello || now - h.last_sent < heartbeat_period(h)) continue;
    // A confirmed UDP session that hears us: our heartbeat is a datagram of the session, so
    // at rest the connection carries nothing either way.
    if (d_.udp.heartbeat(h, now)) continue;
    if (hb.empty()) hb = proto::encode(proto::Heartbeat{static_cast<uint64_t>(now)});
    if (auto s = d_.sender.send_raw(h.identity, hb); !s.ok()) {
      L()->debug("send heartbeat to {} failed: {}", h.identity, s.error().message);
      continue;
    }
    h.last_sent = now;
  }
}

void AgentChannel::disconnect_host(const std::string& host_id, const std::string& why) {
  auto* h = d_.registry.find(host_id);
  if (!h || !h->online) return;
  // Like a lost heartbeat, at once: no more orders go to it, rollouts count it as unknown.
  h->online = false;
  h->said_hello = false;
  d_.registry.close_udp_session(*h);  // its datagrams are an unknown session from now on
  L()->warn("{} is disconnected: {}", host_id, why);
  d_.changed.mark();
  if (auto s = d_.executor.hosts_lost({host_id}); !s.ok())
    L()->error("cannot record that {} is disconnected in its rollouts: {}", host_id, s.error().message);
}

}  // namespace gantry::coordinator
