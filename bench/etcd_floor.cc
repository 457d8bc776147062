// The etcd floor of figure 2b (bench/run ha-orchestration, docs/BENCHMARKS.md): the keys a
// 10,000-host rollout in 100 batches writes to etcd, in as many transactions as Gantry's
// coordinator writes (one per batch transition), with nothing else: no coordinator, no agents,
// no reads, through the same etcd client library (coordinator/etcd), in the same key layout
// (docs/HIGH_AVAILABILITY.md). Per transaction: the next batch's orders (one group key) and their
// slots, the previous batch's final slots, its results, timeline entries and events (one group
// key each), the rollout header, the id counters and the write guard; the first transaction also
// holds the rollout's plan (every host's first slot, in keys of 256). Value sizes are those of
// figure 2's rows (flags).
// Prints one JSON line: {"ms":..., "transactions":..., "operations":..., "bytes":...}.
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "coordinator/etcd/etcd_client.h"

namespace po = boost::program_options;
using gantry::etcd::Op;

namespace {

std::string pad(uint64_t n, int width) {
  std::string s = std::to_string(n);
  return std::string(static_cast<size_t>(std::max<int>(0, width - static_cast<int>(s.size()))), '0') + s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string store, prefix;
  int hosts = 10000, batch = 100;
  size_t slot_b = 230, order_b = 770, result_b = 250, timeline_b = 120, event_b = 110, header_b = 600;
  po::options_description desc("gantry-etcd-floor");
  desc.add_options()("help", "this text")("store", po::value(&store)->required(), "etcd://h1:2379,...")(
      "prefix", po::value(&prefix)->default_value("/gantry-floor/"), "key prefix (wiped first)")(
      "hosts", po::value(&hosts)->default_value(10000), "hosts")("batch", po::value(&batch)->default_value(100),
                                                                 "hosts per batch")(
      "slot-bytes", po::value(&slot_b)->default_value(230), "")("order-bytes", po::value(&order_b)->default_value(770),
                                                                "")("result-bytes",
                                                                    po::value(&result_b)->default_value(250), "")(
      "timeline-bytes", po::value(&timeline_b)->default_value(120), "")("event-bytes",
                                                                        po::value(&event_b)->default_value(110), "");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "gantry-etcd-floor: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (hosts < 1 || batch < 1 || hosts > 1000000) {
    std::cerr << "gantry-etcd-floor: --hosts 1..1000000 and --batch >= 1\n";
    return 2;
  }
  auto cfg = gantry::etcd::parse_store_uri(store);
  if (!cfg) {
    std::cerr << "gantry-etcd-floor: " << cfg.error().message << "\n";
    return 2;
  }
  cfg->call_timeout_ms = 30000;
  auto client = gantry::etcd::Client::connect(*cfg);
  if (!client) {
    std::cerr << "gantry-etcd-floor: " << client.error().message << "\n";
    return 1;
  }
  auto& c = **client;
  if (auto w = c.txn({}, {Op::del(prefix, gantry::etcd::prefix_end(prefix))}); !w) {
    std::cerr << "gantry-etcd-floor: " << w.error().message << "\n";
    return 1;
  }
  const std::string slot(slot_b, 's'), order(order_b, 'o'), result(result_b, 'r'), timeline(timeline_b, 't'),
      event(event_b, 'e'), header(header_b, 'h');
  const int batches = (hosts + batch - 1) / batch;
  auto host_range = [&](int b) { return std::make_pair(b * batch, std::min(hosts, (b + 1) * batch)); };
  size_t ops_total = 0, bytes = 0, txns = 0;
  uint64_t event_id = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int b = 0; b <= batches; ++b) {
    std::vector<Op> ops;
    auto put = [&](std::string k, const std::string& v) {
      bytes += k.size() + v.size();
      ops.push_back(Op::put(std::move(k), v));
    };
    if (b == 0)  // the plan: every host's first slot (the first batch's as ordered)
      for (int h = 0; h < hosts; h += 256)
        put(prefix + "slot_plan/1/" + pad(static_cast<uint64_t>(h), 10),
            std::string(slot.size() * static_cast<size_t>(std::min(256, hosts - h)), 's'));
    if (b < batches) {
      auto [from, to] = host_range(b);
      for (int h = from; h < to; ++h) {
        if (b > 0) put(prefix + "slot/1/" + pad(static_cast<uint64_t>(h), 10), slot);
      }
      put(prefix + "order/1/" + pad(static_cast<uint64_t>(from + 1), 20),
          std::string(order.size() * static_cast<size_t>(to - from), 'o'));
    }
    if (b > 0) {
      auto [from, to] = host_range(b - 1);
      for (int h = from; h < to; ++h) put(prefix + "slot/1/" + pad(static_cast<uint64_t>(h), 10), slot);  // final
      const auto n = static_cast<size_t>(to - from);
      put(prefix + "result/1/" + pad(static_cast<uint64_t>(2 * b), 20), std::string(result.size() * n, 'r'));
      put(prefix + "timeline/1/" + pad(static_cast<uint64_t>(2 * b + 1), 20), std::string(timeline.size() * n, 't'));
      put(prefix + "event/1/" + pad(event_id + 1, 20), std::string(event.size() * n, 'e'));
      event_id += n;
    }
    put(prefix + "rollout/1", header);
    put(prefix + "meta/counters", std::string(80, 'c'));
    put(prefix + "meta/write", std::string(24, 'w'));
    ops_total += ops.size();
    auto r = c.txn({}, ops);
    if (!r) {
      std::cerr << "gantry-etcd-floor: transaction " << txns << ": " << r.error().message << "\n";
      return 1;
    }
    ++txns;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  (void)c.txn({}, {Op::del(prefix, gantry::etcd::prefix_end(prefix))});
  std::cout << nlohmann::json{{"ms", ms}, {"transactions", txns}, {"operations", ops_total}, {"bytes", bytes}}.dump()
            << "\n";
  return 0;
}
