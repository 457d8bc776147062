// gantry-fleet-sim: many simulated agents in one process, speaking the real protocol through
// common/, plus the baselines the benchmarks compare Gantry with (see bench/README.md).
#include <cstring>
#include <iostream>
#include <string>

#include "bench/sim_common.h"
#include "common/util/rlimit.h"

int main(int argc, char** argv) {
  const char* usage =
      "Usage: gantry-fleet-sim SUBCOMMAND [options]   (SUBCOMMAND --help for options)\n"
      "  agents    simulated agents (DEALER + optional SUB) against a real coordinator\n"
      "  keys      the simulated agents' CURVE public keys, `HOST KEY` per line (gantry keys accept-file)\n"
      "  floor     the raw order-and-acknowledge floor: a bare ROUTER ordering the same messages\n"
      "  tcp-fan   plain TCP writer loop: the same bytes to N accepted sockets (broadcast baseline)\n"
      "  tcp-recv  N plain TCP receivers for tcp-fan\n"
      "  pub-fan   a bare zmq PUB publishing the rollback Signal to SUB listeners (broadcast: the transport part)\n"
      "  copy-send serve one file to N TCP receivers at once (release-distribution baseline)\n"
      "  copy-recv one TCP receiver for copy-send, writing to a file\n"
      "  op        one operator request (JSON args), printing send/receive timestamps\n";
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::cout << usage;
    return argc < 2 ? 2 : 0;
  }
  gantry::raise_fd_limit();
  std::string sub = argv[1];
  if (sub == "agents") return gantry::bench::run_agents(argc - 1, argv + 1);
  if (sub == "keys") return gantry::bench::run_keys(argc - 1, argv + 1);
  if (sub == "floor") return gantry::bench::run_floor(argc - 1, argv + 1);
  if (sub == "tcp-fan") return gantry::bench::run_tcp_fan(argc - 1, argv + 1);
  if (sub == "tcp-recv") return gantry::bench::run_tcp_recv(argc - 1, argv + 1);
  if (sub == "pub-fan") return gantry::bench::run_pub_fan(argc - 1, argv + 1);
  if (sub == "copy-send") return gantry::bench::run_copy_send(argc - 1, argv + 1);
  if (sub == "copy-recv") return gantry::bench::run_copy_recv(argc - 1, argv + 1);
  if (sub == "op") return gantry::bench::run_op(argc - 1, argv + 1);
  std::cerr << "gantry-fleet-sim: unknown subcommand " << sub << "\n" << usage;
  return 2;
}
