// gantry-demo-load: steady HTTP load for the demo (tests/support/load_client). Sends GETs to
// 127.0.0.1:PORT at RATE requests/s; on SIGUSR1 prints one line with the counts since the last
// line ("requests=N failed=N (non-2xx N, errors N) v1=N ...") and starts counting afresh; on
// SIGTERM or SIGINT prints the last line and exits.
//   gantry-demo-load --port P [--path /work?ms=20] [--rate 200]
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/support/load_client.h"

int main(int argc, char** argv) {
  int port = 0, rate = 200;
  std::string path = "/work?ms=20";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--port")
      port = std::atoi(v.c_str());
    else if (a == "--rate")
      rate = std::atoi(v.c_str());
    else if (a == "--path")
      path = v;
    else {
      std::fprintf(stderr, "usage: gantry-demo-load --port P [--path PATH] [--rate N]\n");
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || rate <= 0 || rate > 100000 || path.empty() || path[0] != '/') {
    std::fprintf(stderr, "gantry-demo-load: --port 1-65535, --rate 1-100000 and a /path are required\n");
    return 2;
  }
  // Signals are taken by sigwait on this thread only: block them before the senders start.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  gantry::testing::LoadClient load(port, path, rate);
  load.start();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    auto c = sig == SIGUSR1 ? load.take() : load.stop();
    std::printf("%s\n", c.summary().c_str());
    for (const auto& s : c.samples) std::printf("  failure: %s\n", s.c_str());
    std::fflush(stdout);
    if (sig != SIGUSR1) return 0;
  }
}
