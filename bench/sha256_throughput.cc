// gantry-sha256-bench: throughput of the SHA-256 Gantry uses (common/util/sha256, Nettle) next to
// libsodium's crypto_hash_sha256 on the same buffer in the same run, and the memory libnettle
// takes in the process (the resident pages of its mappings in /proc/self/smaps).
//
// Prints one JSON line: MiB/s of each run per implementation (alternating runs), the resident
// KiB of libnettle's mappings and the process's VmRSS.
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "common/util/sha256.h"

namespace po = boost::program_options;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Resident KiB of the mappings whose path contains `name`. A mapping's header line starts with
// its address range ("7f12-7f34 r-xp ..."); its fields ("Rss:   12 kB") follow.
long resident_kib_of(const std::string& name) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  long kib = 0;
  while (std::getline(in, line)) {
    const std::string first = line.substr(0, line.find(' '));
    if (first.find('-') != std::string::npos && first.find_first_not_of("0123456789abcdef-") == std::string::npos) {
      in_mapping = line.find(name) != std::string::npos;
    } else if (in_mapping && line.rfind("Rss:", 0) == 0) {
      kib += std::stol(line.substr(4));
    }
  }
  return kib;
}

long vm_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  int mib = 256, runs = 5;
  po::options_description opts("gantry-sha256-bench");
  opts.add_options()("help,h", "this help")("mib", po::value(&mib)->default_value(256), "MiB hashed per run (1..4096)")(
      "runs", po::value(&runs)->default_value(5), "runs per implementation (1..100)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "gantry-sha256-bench: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  if (mib < 1 || mib > 4096 || runs < 1 || runs > 100) {
    std::cerr << "gantry-sha256-bench: --mib 1..4096, --runs 1..100\n";
    return 2;
  }
  if (sodium_init() < 0) return 1;
  // Hashed in 256 KiB pieces (as sha256_file reads) cycling over one 8 MiB buffer, the same
  // bytes for both implementations.
  std::string buf(8 << 20, '\0');
  randombytes_buf(buf.data(), buf.size());
  const size_t piece = 256 << 10;
  const uint64_t total = static_cast<uint64_t>(mib) << 20;
  std::vector<double> nettle, sodium;
  std::string d1, d2;
  for (int r = 0; r < runs; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    gantry::Sha256 h;
    for (uint64_t off = 0; off < total; off += piece) h.update(std::string_view(buf).substr(off % buf.size(), piece));
    d1 = h.hex_digest();
    nettle.push_back(mib / seconds_since(t0));

    t0 = std::chrono::steady_clock::now();
    crypto_hash_sha256_state s;
    crypto_hash_sha256_init(&s);
    for (uint64_t off = 0; off < total; off += piece)
      crypto_hash_sha256_update(&s, reinterpret_cast<const unsigned char*>(buf.data()) + off % buf.size(), piece);
    unsigned char out[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&s, out);
    sodium.push_back(mib / seconds_since(t0));
    static const char* hex = "0123456789abcdef";
    d2.clear();
    for (unsigned char b : out) d2 += hex[b >> 4], d2 += hex[b & 15];
  }
  if (d1 != d2) {
    std::cerr << "gantry-sha256-bench: the digests differ: " << d1 << " " << d2 << "\n";
    return 1;
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  nlohmann::json j{{"mib_per_run", mib},
                   {"gantry_nettle_mib_s", nettle},
                   {"gantry_nettle_median_mib_s", median(nettle)},
                   {"libsodium_mib_s", sodium},
                   {"libsodium_median_mib_s", median(sodium)},
                   {"libnettle_resident_kib", resident_kib_of("libnettle")},
                   {"vm_rss_kib", vm_rss_kib()}};
  std::cout << j.dump() << "\n";
  return 0;
}
