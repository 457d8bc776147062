// Small helpers shared by the fleet simulator's subcommands.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

namespace gantry::bench {

// Wall-clock microseconds: the simulator, the baselines and the driver run on one machine and
// compare timestamps across processes.
inline int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// One JSON object per line on stdout; the driver (bench/bench.py) reads these.
inline void emit(const nlohmann::json& j) {
  std::string s = j.dump();
  s.push_back('\n');
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

// The CURVE key pair of simulated agent `host_id`, derived from `seed` (libsodium
// crypto_box_seed_keypair over a BLAKE2b hash of seed and host id), both halves Z85. Every
// simulated host gets its own key, as real hosts do, and the driver can enroll them all
// (`gantry-fleet-sim keys` prints the public halves) without 10,000 key files.
struct SimKeyPair {
  std::string public_z85, secret_z85;
};
SimKeyPair sim_keypair(const std::string& seed, const std::string& host_id);
std::string sim_host_id(const std::string& prefix, int index);

// Parses a subcommand's options; false on an error (reported) or --help (printed).
inline bool parse_opts(boost::program_options::options_description& desc, int argc, char** argv,
                       boost::program_options::variables_map& vm, const char* name) {
  namespace po = boost::program_options;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "gantry-fleet-sim " << name << ": " << e.what() << "\n";
    return false;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  return true;
}

// "127.0.0.1:PORT" -> sockaddr_in
inline sockaddr_in parse_addr(const std::string& s) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  auto colon = s.rfind(':');
  inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr);
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(s.substr(colon + 1))));
  return a;
}

int run_agents(int argc, char** argv);
int run_keys(int argc, char** argv);
int run_floor(int argc, char** argv);
int run_tcp_fan(int argc, char** argv);
int run_tcp_recv(int argc, char** argv);
int run_pub_fan(int argc, char** argv);
int run_op(int argc, char** argv);
int run_copy_send(int argc, char** argv);
int run_copy_recv(int argc, char** argv);

}  // namespace gantry::bench
