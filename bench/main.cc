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
      "  floor     the raw order-and-acknowledge floor: a bare ROUTER ordering the same messages\n"
      "  tcp-fan   plain TCP writer loop: the same bytes to N accepted sockets (broadcast baseline)\n"
      "  tcp-recv  N plain TCP receivers for tcp-fan\n"
      "  op        one operator request (JSON args), printing send/receive timestamps\n";
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::cout << usage;
    return argc < 2 ? 2 : 0;
  }
  gantry::raise_fd_limit();
  std::string sub = argv[1];
  if (sub == "agents") return gantry::bench::run_agents(argc - 1, argv + 1);
  if (sub == "floor") return gantry::bench::run_floor(argc - 1, argv + 1);
  if (sub == "tcp-fan") return gantry::bench::run_tcp_fan(argc - 1, argv + 1);
  if (sub == "tcp-recv") return gantry::bench::run_tcp_recv(argc - 1, argv + 1);
  if (sub == "op") return gantry::bench::run_op(argc - 1, argv + 1);
  std::cerr << "gantry-fleet-sim: unknown subcommand " << sub << "\n" << usage;
  return 2;
}
