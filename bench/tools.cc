// The baselines and the operator client of gantry-fleet-sim:
//   floor     a bare ROUTER that greets agents, heartbeats them by the coordinator's rule, and
//             orders them batch by batch with the same Order messages the coordinator sends,
//             waiting for each batch's reports, with no store, no state machine: the
//             order-and-acknowledge floor (and, ordering nobody, the at-rest floor). With
//             --udp-heartbeats it also offers UDP heartbeat sessions and checks the datagrams
//             by the coordinator's rule.
//   tcp-fan   a plain TCP writer loop sending the same bytes to N accepted sockets.
//   tcp-recv  N plain TCP receivers recording when each run's bytes arrived.
//   op        one operator request, with send and receive timestamps.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/program_options.hpp>
#include <zmq.hpp>

#include "bench/sim_common.h"
#include "bench/udp_sessions.h"
#include "common/protocol/codec.h"
#include "common/security/keys.h"
#include "common/transport/udp_heartbeat.h"
#include "common/transport/zmq_transport.h"

namespace po = boost::program_options;

namespace gantry::bench {
namespace {

// "tcp://HOST:PORT" (HOST maybe [v6]) -> (HOST, PORT) for a UDP socket beside the ROUTER.
std::pair<std::string, uint16_t> split_tcp_endpoint(const std::string& ep) {
  std::string rest = ep.substr(ep.find("://") + 3);
  const auto colon = rest.rfind(':');
  std::string host = rest.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, static_cast<uint16_t>(std::stoi(rest.substr(colon + 1)))};
}

std::string signal_bytes(uint64_t run, const std::string& service) {
  return proto::encode(proto::Signal{"rollback", run, service});
}

}  // namespace

// ---- floor ----------------------------------------------------------------------------------

int run_floor(int argc, char** argv) {
  std::string bind = "tcp://127.0.0.1:*", endpoint_file, service = "web", version = "v1", prefix = "sim-";
  std::string server_secret;
  int hosts = 100, batch = 100, timeout_s = 300, io_threads = 1, stats_ms = 1000;
  int64_t hb_ms = 1000, coord_hb_ms = 10000;
  uint64_t epoch = 0;
  bool udp = true;
  po::options_description desc("gantry-fleet-sim floor: the raw order-and-acknowledge floor.\nOptions");
  desc.add_options()("help,h", "show this help")("bind", po::value(&bind)->default_value(bind), "ROUTER endpoint")(
      "endpoint-file", po::value(&endpoint_file), "write the bound endpoint here")(
      "hosts", po::value(&hosts)->default_value(hosts), "wait for this many hellos, then order them all")(
      "batch", po::value(&batch)->default_value(batch), "hosts per batch")(
      "service", po::value(&service)->default_value(service), "service")(
      "version", po::value(&version)->default_value(version), "target version")(
      "timeout-s", po::value(&timeout_s)->default_value(timeout_s), "give up after this long")(
      "heartbeat-interval-ms", po::value(&hb_ms)->default_value(hb_ms), "agents' heartbeat interval (in the welcome)")(
      "coordinator-heartbeat-ms", po::value(&coord_hb_ms)->default_value(coord_hb_ms),
      "as the coordinator's option: announced to agents that support it, which then get a heartbeat only after this "
      "long "
      "without any message; 0: every interval")("io-threads", po::value(&io_threads)->default_value(io_threads),
                                                "zmq I/O threads (the coordinator's default)")(
      "udp-heartbeats", po::value(&udp)->default_value(udp),
      "1: as the coordinator's default, a UDP heartbeat socket on the ROUTER's address and port number (any free port "
      "if "
      "that one is taken), a session offered to each agent that announces them, datagrams checked, confirmed and "
      "declared "
      "lost by the coordinator's rule; 0: heartbeats over the connections only")(
      "stats-ms", po::value(&stats_ms)->default_value(stats_ms), "print a stats line this often")(
      "epoch", po::value(&epoch)->default_value(epoch),
      "epoch in the welcomes (coordinators count from 1; the storm "
      "baseline restarts the floor with a new one)")("server-secret-key", po::value(&server_secret),
                                                     "CURVE server with this secret key (Z85); a ZAP handler in the "
                                                     "loop lets every client key in (no allowlist: the floor)");
  po::variables_map vm;
  if (!parse_opts(desc, argc, argv, vm, "floor")) return vm.count("help") ? 0 : 2;

  zmq::context_t ctx(std::clamp(io_threads, 1, 16));
  ctx.set(zmq::ctxopt::max_sockets, 30000);
  transport::configure_context(ctx);  // the coordinator's context settings
  zmq::socket_t r(ctx, zmq::socket_type::router);
  transport::SocketOptions so;  // as the coordinator's agent socket
  so.router_mandatory = true;
  so.router_handover = true;
  so.max_msg_size = 2 * 1024 * 1024;
  so.backlog = 65535;  // as the coordinator (capped by net.core.somaxconn)
  std::unique_ptr<zmq::socket_t> zap;
  if (!server_secret.empty()) {
    // As the coordinator: CURVE, random routing ids (no handover), ZAP enforced, the ZAP
    // handler answered in this loop. It allows every key: no allowlist, no store.
    so.router_handover = false;
    so.curve.server = true;
    so.curve.secret_key = server_secret;
    so.curve.zap_domain = "gantry-agent";
    zap = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::rep);
    zap->set(zmq::sockopt::linger, 0);
    zap->bind("inproc://zeromq.zap.01");
  }
  transport::configure(r, so);
  r.bind(bind);
  std::string ep = r.get(zmq::sockopt::last_endpoint);
  if (!endpoint_file.empty()) {
    FILE* f = std::fopen((endpoint_file + ".tmp").c_str(), "w");
    std::fprintf(f, "%s\n", ep.c_str());
    std::fclose(f);
    std::rename((endpoint_file + ".tmp").c_str(), endpoint_file.c_str());
  }
  udp_hb::Receiver rx;
  if (udp) {
    auto [udp_host, udp_port] = split_tcp_endpoint(ep);
    Status st = rx.bind(udp_host, udp_port);
    if (!st.ok()) st = rx.bind(udp_host, 0);
    if (!st.ok()) {
      std::cerr << "gantry-fleet-sim floor: " << st.error().message << "\n";
      return 2;
    }
  }
  emit({{"ev", "bound"}, {"endpoint", ep}, {"udp_port", rx.port()}});

  std::set<std::string> greeted;
  std::vector<std::string> order;           // host ids in order
  std::map<std::string, std::string> conn;  // host id -> routing id of its newest hello
  // As the coordinator's heartbeat rule: host id -> (its period, when we last sent it anything).
  std::map<std::string, std::pair<int64_t, int64_t>> hb;
  auto sent = [&](const std::string& host) { hb[host].second = mono_ms(); };
  std::set<std::string> known;                 // routing ids that said hello
  std::map<std::string, int64_t> hello_asked;  // routing id -> when it was last asked for a hello
  int64_t deadline = mono_ms() + static_cast<int64_t>(timeout_s) * 1000, next_hb = mono_ms();
  bool started = false;
  size_t next_host = 0;
  std::map<std::string, std::pair<std::string, proto::Order>>
      waiting;  // current batch, unreported: id -> (host, order)
  std::map<std::string, int64_t> sent_at;
  uint64_t seq = 0, acks = 0, reports = 0, orders = 0, resent = 0, hb_sent = 0, hb_in = 0;
  UdpSessions udp_sessions;
  int64_t next_stats = mono_ms();
  int64_t t_first = 0, t_last = 0;
  int batches = 0;
  const std::string sha(64, 'a');
  auto send_batch = [&]() {
    for (int k = 0; k < batch && next_host < order.size(); ++k, ++next_host) {
      proto::Order o;
      o.order_id = "floor-" + std::to_string(++seq);
      o.rollout_id = 999999;  // ids the coordinator never uses, so agents do not de-duplicate its orders
      o.service = service;
      o.kind = "update";
      o.version = version;
      o.sha256 = sha;
      o.size = 1024;
      waiting[o.order_id] = {order[next_host], o};
      sent_at[o.order_id] = mono_ms();
      orders++;
      if (transport::send_to(r, conn[order[next_host]], o).ok()) sent(order[next_host]);
    }
    batches++;
  };
  auto stats = [&](const char* ev) {
    return nlohmann::json{{"ev", ev},
                          {"at_us", wall_us()},
                          {"hosts", order.size()},
                          {"heartbeats_in", hb_in},
                          {"heartbeats_sent", hb_sent},
                          {"udp", udp_sessions.counters()}};
  };
  while (mono_ms() < deadline) {
    // The ROUTER, the UDP socket as a plain fd (when on), the ZAP handler (with CURVE).
    zmq::pollitem_t it[3] = {{r.handle(), 0, ZMQ_POLLIN, 0}};
    int n_it = 1, i_udp = -1;
    if (udp) {
      i_udp = n_it;
      it[n_it++] = {nullptr, rx.fd(), ZMQ_POLLIN, 0};
    }
    if (zap) it[n_it++] = {zap->handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(it, n_it, std::chrono::milliseconds(100));
    if (i_udp >= 0 && (it[i_udp].revents & ZMQ_POLLIN)) {
      const int64_t now = mono_ms();
      rx.drain(10000, [&](const unsigned char* data, std::size_t len, const udp_hb::Peer& peer) {
        auto confirm = udp_sessions.on_datagram(data, len, now, peer);
        if (!confirm) return;
        // As the coordinator: the first valid datagram of a session is confirmed on the connection.
        proto::Heartbeat h;
        h.seq = static_cast<uint64_t>(now);
        h.udp_seq = confirm->seq;
        if (transport::send_to(r, confirm->conn, h).ok()) hb[confirm->host].second = now;
      });
    }
    for (int k = 0; zap && k < 10000; ++k) {
      // ZAP (RFC 27): version, request id, domain, address, identity, mechanism, key -> 200.
      std::vector<zmq::message_t> req;
      zmq::message_t part;
      if (!zap->recv(part, zmq::recv_flags::dontwait)) break;
      req.push_back(std::move(part));
      while (req.back().more()) {
        zmq::message_t m;
        if (!zap->recv(m, zmq::recv_flags::none)) break;
        req.push_back(std::move(m));
      }
      std::string user;
      if (req.size() >= 7 && req[6].size() == 32) {
        char z85[41];
        zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
        user = z85;
      }
      zap->send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      zap->send(req.size() > 1 ? zmq::buffer(req[1].data(), req[1].size()) : zmq::const_buffer(),
                zmq::send_flags::sndmore);
      zap->send(zmq::str_buffer("200"), zmq::send_flags::sndmore);
      zap->send(zmq::str_buffer("OK"), zmq::send_flags::sndmore);
      zap->send(zmq::buffer(user), zmq::send_flags::sndmore);
      zap->send(zmq::str_buffer(""), zmq::send_flags::none);
    }
    const int64_t t_in = mono_ms();
    for (int k = 0; k < 10000; ++k) {
      auto in = transport::recv_routed(r);
      if (!in) break;
      auto m = proto::decode(in->payload);
      if (!m) continue;
      if (udp) udp_sessions.touch_conn(in->identity, t_in);
      if (auto* h = std::get_if<proto::Hello>(&*m)) {
        proto::Welcome w;
        w.epoch = epoch;  // coordinators count epochs from 1: by default agents can tell the floor's welcome apart
        w.heartbeat_interval_ms = static_cast<uint32_t>(hb_ms);
        const bool sparse = coord_hb_ms > 0 && (h->capabilities & proto::kCapCoordinatorHeartbeat);
        if (sparse) w.coordinator_heartbeat_ms = static_cast<uint32_t>(std::max(coord_hb_ms, hb_ms));
        if (udp && (h->capabilities & proto::kCapUdpHeartbeat)) {
          auto offer = udp_sessions.open(h->host_id, in->identity, t_in);
          w.udp_session = offer.session;
          w.udp_key = offer.key;
          w.udp_port = offer.session != 0 ? rx.port() : 0;
        } else {
          udp_sessions.close(h->host_id);
        }
        (void)transport::send_to(r, in->identity, w);
        hb[h->host_id] = {sparse ? std::max(coord_hb_ms, hb_ms) : hb_ms, mono_ms()};
        conn[h->host_id] = in->identity;
        if (greeted.insert(h->host_id).second) order.push_back(h->host_id);
        known.insert(in->identity);
      } else if (!known.count(in->identity)) {
        // As the coordinator: a connection that has not said hello (here: since this floor
        // started) is asked for one, so agents of a restarted floor do not wait for a timeout;
        // at most once per connection per heartbeat interval (queued heartbeats arrive together).
        int64_t& asked = hello_asked[in->identity];
        if (asked == 0 || mono_ms() - asked >= hb_ms) {
          asked = mono_ms();
          (void)transport::send_to(r, in->identity, proto::ErrorMsg{"hello_required", "say hello first", 0, ""});
        }
      } else if (auto* hbm = std::get_if<proto::Heartbeat>(&*m)) {
        hb_in++;
        if (udp && hbm->udp_deaf) udp_sessions.deaf(in->identity);
      } else if (std::get_if<proto::OrderAck>(&*m)) {
        acks++;
      } else if (auto* rep = std::get_if<proto::Report>(&*m)) {
        reports++;
        if (waiting.erase(rep->order_id) && waiting.empty()) {
          t_last = wall_us();
          if (next_host < order.size()) send_batch();
        }
      }
    }
    int64_t now = mono_ms();
    if (now >= next_hb) {  // as the coordinator does, so agents see a live peer
      next_hb = now + hb_ms;
      // The coordinator's rule: a heartbeat to a host only when nothing went to it for its period.
      const std::string bytes = proto::encode(proto::Heartbeat{static_cast<uint64_t>(now)});
      for (auto& [host, ps] : hb) {
        if (now - ps.second < ps.first) continue;
        if (auto d = udp ? udp_sessions.heartbeat_for(host) : std::nullopt) {  // as the coordinator: a datagram
          if (rx.send_to(*d, *udp_sessions.peer_of(host)).ok()) {
            ps.second = now;
            continue;
          }
        }
        if (transport::send_raw_to(r, conn[host], bytes).ok()) ps.second = now;
        hb_sent++;
      }
      // As the coordinator: a confirmed session silent for 2 intervals is declared lost, and the
      // agent heartbeats over its connection again until a datagram gets through.
      if (udp) {
        proto::Heartbeat lost;
        lost.seq = static_cast<uint64_t>(now);
        lost.udp_lost = true;
        for (const auto& [host, id] : udp_sessions.quiet(now, 2 * hb_ms))
          if (transport::send_to(r, id, lost).ok()) hb[host].second = now;
      }
      // At least once, as the coordinator: unreported orders are resent after 2 s.
      for (auto& [id, ho] : waiting) {
        if (now - sent_at[id] < 2000) continue;
        sent_at[id] = now;
        resent++;
        if (transport::send_to(r, conn[ho.first], ho.second).ok()) sent(ho.first);
      }
    }
    if (!started && static_cast<int>(order.size()) >= hosts) {
      std::sort(order.begin(), order.end());
      started = true;
      t_first = wall_us();
      send_batch();
    }
    if (started && waiting.empty() && next_host >= order.size()) break;
    if (now >= next_stats) {
      next_stats = now + stats_ms;
      emit(stats("stats"));
    }
  }
  bool ok = started && waiting.empty() && next_host >= order.size();
  nlohmann::json fin = stats("floor");
  fin.update({{"ok", ok},
              {"batches", batches},
              {"orders", orders},
              {"acks", acks},
              {"reports", reports},
              {"resent", resent},
              {"t_first_us", t_first},
              {"t_last_us", t_last},
              {"ms", (t_last - t_first) / 1000.0}});
  emit(fin);
  return ok ? 0 : 1;
}

// ---- tcp-fan / tcp-recv ---------------------------------------------------------------------

int run_tcp_fan(int argc, char** argv) {
  std::string listen_addr = "127.0.0.1:0", service = "web", port_file;
  int conns = 100, runs = 10, gap_ms = 300, timeout_s = 120;
  po::options_description desc("gantry-fleet-sim tcp-fan: plain TCP writer loop (broadcast baseline).\nOptions");
  desc.add_options()("help,h", "show this help")("listen", po::value(&listen_addr)->default_value(listen_addr),
                                                 "HOST:PORT")(
      "port-file", po::value(&port_file), "write the bound port here")("conns", po::value(&conns)->default_value(conns),
                                                                       "accept this many connections")(
      "runs", po::value(&runs)->default_value(runs), "send rounds")("gap-ms", po::value(&gap_ms)->default_value(gap_ms),
                                                                    "pause between rounds")(
      "service", po::value(&service)->default_value(service), "service named in the payload")(
      "timeout-s", po::value(&timeout_s)->default_value(timeout_s), "give up accepting after this long");
  po::variables_map vm;
  if (!parse_opts(desc, argc, argv, vm, "tcp-fan")) return vm.count("help") ? 0 : 2;
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = parse_addr(listen_addr);
  if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 4096) != 0) {
    std::perror("tcp-fan: bind/listen");
    return 1;
  }
  socklen_t len = sizeof a;
  getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  if (!port_file.empty()) {
    FILE* f = std::fopen((port_file + ".tmp").c_str(), "w");
    std::fprintf(f, "%d\n", port);
    std::fclose(f);
    std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  }
  emit({{"ev", "bound"}, {"port", port}});
  std::vector<int> fds;
  int64_t deadline = mono_ms() + static_cast<int64_t>(timeout_s) * 1000;
  while (static_cast<int>(fds.size()) < conns && mono_ms() < deadline) {
    pollfd p{ls, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(ls, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as libzmq sets
    fds.push_back(fd);
  }
  emit({{"ev", "accepted"}, {"conns", fds.size()}});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (int run = 1; run <= runs; ++run) {
    // Same framing cost as ZMTP: a small header (here: 4-byte length + 4-byte run) and the
    // encoded Signal a rollback broadcasts.
    std::string body = signal_bytes(static_cast<uint64_t>(run), service);
    std::string msg(8, '\0');
    uint32_t l = htonl(static_cast<uint32_t>(body.size())), rn = htonl(static_cast<uint32_t>(run));
    std::memcpy(msg.data(), &l, 4);
    std::memcpy(msg.data() + 4, &rn, 4);
    msg += body;
    int64_t t0 = wall_us();
    size_t short_writes = 0;
    for (int fd : fds) {
      if (::write(fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) short_writes++;
    }
    int64_t t1 = wall_us();
    emit({{"ev", "fan"},
          {"run", run},
          {"t0_us", t0},
          {"t_written_us", t1},
          {"bytes", msg.size()},
          {"short_writes", short_writes}});
    std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
  }
  for (int fd : fds) ::close(fd);
  ::close(ls);
  return 0;
}

// ---- pub-fan ------------------------------------------------------------------------------

// The libzmq part of the broadcast alone: a bare PUB (the coordinator's PUB options, one I/O
// thread) publishing the encoded rollback Signal, so the same simulated SUB listeners show how
// much of a rollback's fan-out is the transport and how much the coordinator.
int run_pub_fan(int argc, char** argv) {
  std::string bind = "tcp://127.0.0.1:*", service = "web";
  int runs = 10, gap_ms = 300, wait_ms = 3000;
  uint64_t first_id = 1000000;
  po::options_description desc(
      "gantry-fleet-sim pub-fan: a bare PUB publishing the rollback Signal (broadcast baseline).\nOptions");
  desc.add_options()("help,h", "show this help")("bind", po::value(&bind)->default_value(bind), "PUB endpoint")(
      "runs", po::value(&runs)->default_value(runs), "signals to publish")(
      "gap-ms", po::value(&gap_ms)->default_value(gap_ms), "pause between signals")(
      "wait-ms", po::value(&wait_ms)->default_value(wait_ms), "wait this long before the first (subscribers connect)")(
      "first-id", po::value(&first_id)->default_value(first_id), "rollout id of the first signal (then +1 each)")(
      "service", po::value(&service)->default_value(service), "service named in the signal");
  po::variables_map vm;
  if (!parse_opts(desc, argc, argv, vm, "pub-fan")) return vm.count("help") ? 0 : 2;
  zmq::context_t ctx(1);
  ctx.set(zmq::ctxopt::max_sockets, 30000);
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  transport::SocketOptions so;  // as the coordinator's PUB
  so.max_msg_size = 64 * 1024;
  so.backlog = 65535;  // as the coordinator (capped by net.core.somaxconn)
  transport::configure(pub, so);
  pub.bind(bind);
  emit({{"ev", "bound"}, {"endpoint", pub.get(zmq::sockopt::last_endpoint)}});
  std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  for (int k = 0; k < runs; ++k) {
    uint64_t id = first_id + static_cast<uint64_t>(k);
    int64_t t0 = wall_us();
    Status st = transport::send(pub, proto::Signal{"rollback", id, service});
    emit({{"ev", "fan"}, {"id", id}, {"t0_us", t0}, {"ok", st.ok()}});
    std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
  }
  return 0;
}

int run_tcp_recv(int argc, char** argv) {
  std::string connect_addr;
  int conns = 100, duration_s = 120, stats_ms = 250;
  po::options_description desc("gantry-fleet-sim tcp-recv: plain TCP receivers for tcp-fan.\nOptions");
  desc.add_options()("help,h", "show this help")("connect", po::value(&connect_addr), "HOST:PORT of tcp-fan")(
      "conns", po::value(&conns)->default_value(conns), "connections")(
      "stats-ms", po::value(&stats_ms)->default_value(stats_ms), "stats line period")(
      "duration-s", po::value(&duration_s)->default_value(duration_s), "exit after this long at the latest");
  po::variables_map vm;
  if (!parse_opts(desc, argc, argv, vm, "tcp-recv")) return vm.count("help") ? 0 : 2;
  std::signal(SIGPIPE, SIG_IGN);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  sockaddr_in a = parse_addr(connect_addr);
  std::vector<int> fds;
  std::vector<std::string> bufs(static_cast<size_t>(conns));
  for (int i = 0; i < conns; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::perror("tcp-recv: connect");
      ::close(fd);
      continue;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = fds.size();
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    fds.push_back(fd);
  }
  struct Run {
    uint64_t count = 0;
    int64_t first_us = 0, last_us = 0;
  };
  std::map<uint32_t, Run> runs;
  auto stats = [&](bool final) {
    nlohmann::json r = nlohmann::json::object();
    for (const auto& [k, v] : runs)
      r[std::to_string(k)] = {{"count", v.count}, {"first_us", v.first_us}, {"last_us", v.last_us}};
    emit({{"ev", "stats"}, {"conns", fds.size()}, {"runs", r}, {"final", final}});
  };
  std::vector<epoll_event> evs(1024);
  int64_t end = mono_ms() + static_cast<int64_t>(duration_s) * 1000, next_stats = mono_ms();
  size_t open = fds.size();
  char buf[4096];
  while (mono_ms() < end && open > 0) {
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 50);
    int64_t t = wall_us();
    for (int i = 0; i < n; ++i) {
      size_t idx = evs[i].data.u64;
      ssize_t got = ::read(fds[idx], buf, sizeof buf);
      if (got <= 0) {
        if (got == 0) {
          epoll_ctl(ep, EPOLL_CTL_DEL, fds[idx], nullptr);
          open--;
        }
        continue;
      }
      auto& b = bufs[idx];
      b.append(buf, static_cast<size_t>(got));
      while (b.size() >= 8) {
        uint32_t l, rn;
        std::memcpy(&l, b.data(), 4);
        std::memcpy(&rn, b.data() + 4, 4);
        l = ntohl(l);
        rn = ntohl(rn);
        if (b.size() < 8 + l) break;
        b.erase(0, 8 + l);
        auto& r = runs[rn];
        r.count++;
        if (r.first_us == 0) r.first_us = t;
        r.last_us = std::max(r.last_us, t);
      }
    }
    if (mono_ms() >= next_stats) {
      next_stats = mono_ms() + stats_ms;
      stats(false);
    }
  }
  stats(true);
  for (int fd : fds) ::close(fd);
  ::close(ep);
  return 0;
}

// ---- op -------------------------------------------------------------------------------------

int run_op(int argc, char** argv) {
  std::string endpoint, command, args_json = "{}", key_file, coordinator_key_file;
  int timeout_ms = 30000, wait_end_after_ms = -1;
  bool brief = false;
  po::options_description desc("gantry-fleet-sim op: one operator request with timestamps.\nOptions");
  desc.add_options()("help,h", "show this help")("endpoint", po::value(&endpoint), "coordinator operator endpoint")(
      "command", po::value(&command), "e.g. rollout.start")("args", po::value(&args_json)->default_value(args_json),
                                                            "JSON object")(
      "brief", po::bool_switch(&brief), "drop the result's hosts lists from the output")(
      "wait-end-after-ms", po::value(&wait_end_after_ms),
      "rollout.start: then stay quiet this long (no request, no exit), and poll rollout.get every 50 ms "
      "until the rollout ends; its last answer is the output's \"end\"")(
      "timeout-ms", po::value(&timeout_ms)->default_value(timeout_ms), "wait this long for the reply")(
      "key", po::value(&key_file), "CURVE: the operator's secret key file (as gantry --key)")(
      "coordinator-key", po::value(&coordinator_key_file),
      "CURVE: the coordinator's public key file (as gantry --coordinator-key)");
  po::variables_map vm;
  if (!parse_opts(desc, argc, argv, vm, "op")) return vm.count("help") ? 0 : 2;
  zmq::context_t ctx(1);
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  transport::SocketOptions so;
  so.max_msg_size = 64 * 1024 * 1024;
  if (!key_file.empty()) {
    auto kp = security::read_curve_secret(key_file);
    auto server = security::read_curve_public(coordinator_key_file);
    if (!kp || !server) {
      emit({{"ev", "op"}, {"ok", false}, {"error", "cannot read --key / --coordinator-key"}});
      return 2;
    }
    so.curve.public_key = kp->public_z85;
    so.curve.secret_key = kp->secret_z85;
    so.curve.server_public_key = *server;
  }
  transport::configure(d, so);
  d.connect(endpoint);
  const int64_t deadline = mono_ms() + timeout_ms;
  int seq = 0;
  // One request and its reply (the reply's wall-clock arrival in *got); nullopt on timeout.
  auto request = [&](const std::string& cmd, nlohmann::json args, int64_t& sent,
                     int64_t& got) -> std::optional<proto::OpReply> {
    proto::OpRequest req;
    req.request_id = "bench-" + std::to_string(::getpid()) + "-" + std::to_string(++seq);
    req.command = cmd;
    req.args = std::move(args);
    req.args["user"] = "bench";
    sent = wall_us();
    if (!transport::send(d, req).ok()) return std::nullopt;
    zmq::pollitem_t it[] = {{d.handle(), 0, ZMQ_POLLIN, 0}};
    while (mono_ms() < deadline) {
      zmq::poll(it, 1, std::chrono::milliseconds(50));
      auto f = transport::recv_frame(d);
      if (!f) continue;
      got = wall_us();
      proto::DecodeLimits lim;
      lim.max_map = 1 << 20;
      auto m = proto::decode(*f, lim);
      if (!m) continue;
      auto* rep = std::get_if<proto::OpReply>(&*m);
      if (rep && rep->request_id == req.request_id) return std::move(*rep);
    }
    return std::nullopt;
  };
  auto shorten = [&](nlohmann::json result) {
    if (brief && result.is_object()) {
      if (result.contains("hosts") && result["hosts"].is_array()) result["hosts"] = result["hosts"].size();
      if (result.contains("batches") && result["batches"].is_array()) result["batches"] = result["batches"].size();
    }
    return result;
  };
  int64_t sent = 0, got = 0;
  auto rep = request(command, nlohmann::json::parse(args_json), sent, got);
  if (!rep) {
    emit({{"ev", "op"}, {"ok", false}, {"error", "timeout"}, {"sent_us", sent}});
    return 4;
  }
  nlohmann::json out = {{"ev", "op"},      {"ok", rep->ok},  {"error", rep->error},
                        {"sent_us", sent}, {"recv_us", got}, {"result", shorten(rep->result)}};
  if (rep->ok && wait_end_after_ms >= 0) {
    // The benchmark measures what the rollout does on this machine meanwhile: this process
    // neither exits nor asks anything until then (its start-up and exit stay out of that time).
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_end_after_ms));
    const uint64_t id = rep->result.value("id", uint64_t{0});
    for (;;) {
      int64_t s2 = 0, g2 = 0;
      auto r = request("rollout.get", {{"id", id}}, s2, g2);
      if (!r) {
        out["ok"] = false;
        out["error"] = "timeout waiting for the rollout's end";
        emit(out);
        return 4;
      }
      const std::string ph = r->result.value("phase", std::string());
      if (ph != "running" && ph != "paused" && ph != "rolling_back" && !ph.empty()) {
        out["end"] = shorten(r->result);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  emit(out);
  return rep->ok ? 0 : 3;
}

}  // namespace gantry::bench
