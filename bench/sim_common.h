// Small helpers shared by the fleet simulator's subcommands.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace gantry::bench {

// Wall-clock microseconds: the simulator, the baselines and the driver run on one machine and
// compare timestamps across processes.
inline int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
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
