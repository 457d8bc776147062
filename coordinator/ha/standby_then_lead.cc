#include "coordinator/ha/standby_then_lead.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include "common/util/log.h"
#include "common/util/sd_notify.h"
#include "common/util/text.h"
#include "coordinator/etcd/etcd_client.h"
#include "coordinator/ha/etcd_artifact_copies.h"
#include "coordinator/ha/etcd_peer_endpoints.h"
#include "coordinator/ha/leader_election.h"
#include "coordinator/ha/member_info.h"
#include "coordinator/ha/standby_server.h"
#include "coordinator/store/etcd_store.h"

namespace gantry::coordinator::ha {

static_assert(kLostGraceMs < LeaderElection::kSafetyMs, "a deposed leader must be gone before its lease can expire");

namespace {
spdlog::logger* L() {
  static const auto l = log::get("coordinator");
  return l.get();
}
}  // namespace

int standby_then_lead(const Config& cfg, Clock& clock, const std::atomic<bool>& stop, const LeadFn& lead) {
  auto ccfg = etcd::parse_store_uri(cfg.store);
  if (!ccfg) {
    L()->critical("--store: {}", ccfg.error().message);
    return 1;
  }
  ccfg->ca_file = cfg.etcd_ca;
  ccfg->cert_file = cfg.etcd_cert;
  ccfg->key_file = cfg.etcd_key;
  auto client = etcd::Client::connect(*ccfg);
  if (!client) {
    L()->critical("cannot set up the etcd client: {}", client.error().message);
    return 1;
  }
  std::shared_ptr<etcd::Client> etcd(std::move(*client));
  const std::string leader_key = cfg.etcd_prefix + "leader";

  // Standing by: reads only. The store is fenced on a leadership no coordinator can hold
  // (create revision -1), so even a write by mistake fails.
  std::unique_ptr<store::Store> reader;
  for (int attempt = 0; !stop && !reader; ++attempt) {
    auto r = store::EtcdStore::open(etcd, cfg.etcd_prefix, store::Fence{leader_key, -1});
    if (r) {
      reader = std::move(*r);
      break;
    }
    if (attempt % 20 == 0) L()->warn("cannot open the etcd store yet: {}", safe_text(r.error().message, 300));
    std::this_thread::sleep_for(std::chrono::milliseconds(kCampaignEveryMs));
  }
  if (!reader) return 0;
  EtcdPeerEndpoints peers(*etcd, cfg.etcd_prefix, cfg.name);
  EtcdArtifactCopies copies(*etcd, cfg.etcd_prefix, cfg.name);
  auto standby = std::make_unique<StandbyServer>(cfg, clock, *reader, cfg.name, peers, copies);
  if (auto s = standby->start(); !s.ok()) {
    L()->critical("cannot start: {}", s.error().message);
    return 1;
  }
  MemberInfo me;
  me.name = cfg.name;
  me.agent = advertised(standby->endpoints().at("agent"), cfg.advertise_host);
  me.operator_ep = advertised(standby->endpoints().at("operator"), cfg.advertise_host);
  me.pub = advertised(cfg.pub_endpoint, cfg.advertise_host);
  if (auto h = standby->endpoints().find("http"); h != standby->endpoints().end())
    me.http = "http://" + advertised(h->second, cfg.advertise_host);
  LeaderElection election(*etcd, LeaderElection::Options{cfg.etcd_prefix, me, cfg.lease_ttl_s});
  sd::notify("READY=1");

  bool keeping_alive = false;
  int failures = 0;
  while (!stop) {
    auto won = election.campaign();
    if (!keeping_alive && won) {
      election.start_keepalive();
      keeping_alive = true;
    }
    if (won && *won) break;
    if (!won) {
      if (failures++ % 20 == 0)
        L()->warn("cannot reach etcd to campaign: {} (standing by)", safe_text(won.error().message, 300));
    } else {
      failures = 0;
    }
    standby->set_leader(election.leader());
    sd::notify("WATCHDOG=1");  // standing by is working: the loop turns
    for (Millis waited = 0; waited < kCampaignEveryMs && !stop; waited += 50) standby->serve_for(50);
  }
  if (stop) {
    election.resign();
    return 0;
  }
  standby.reset();  // its sockets close; the leader binds the same endpoints
  reader.reset();

  auto fenced =
      store::EtcdStore::open(etcd, cfg.etcd_prefix, store::Fence{leader_key, static_cast<int64_t>(election.epoch())});
  if (!fenced) {
    L()->critical("cannot open the etcd store as the leader: {}", fenced.error().message);
    election.resign();
    return 1;
  }
  // The coordinator's loop watches one flag: set on a clean stop and when the leadership is lost.
  // A loop that does not end within kLostGraceMs of a lost leadership is blocked (in a call to
  // an etcd that does not answer: each call waits up to its deadline, and a failed step reads
  // its state back, or exits 75 when etcd is out of reach for that too): the process ends from here, with the
  // lost-leadership code, before etcd can let a standby in (the lease may expire kSafetyMs
  // after lost() at the earliest). Crash-only: everything it acted on is in the store.
  std::atomic<bool> end{false}, lost{false}, done{false};
  std::thread watch([&] {
    int64_t lost_for_ms = 0;
    while (!done) {
      if (stop) end = true;
      if (election.lost()) {
        lost = true;
        end = true;
        if ((lost_for_ms += 20) >= kLostGraceMs) {
          L()->critical(
              "{} stops at once: it lost the leadership ({}) and its loop is still busy after {} ms; it "
              "will stand by when restarted",
              cfg.name, election.lost_reason(), lost_for_ms);
          L()->flush();
          std::_Exit(kExitLostLeadership);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const int rc = lead(std::move(*fenced), election.epoch(), peers, copies, end);
  done = true;
  watch.join();
  if (lost || election.lost()) {
    L()->critical("{} stops: it lost the leadership ({}); it will stand by when restarted", cfg.name,
                  election.lost_reason());
    return kExitLostLeadership;
  }
  election.resign();
  return rc;
}

}  // namespace gantry::coordinator::ha
