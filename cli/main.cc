// gantry: the operator's command line.
#include <csignal>

#include "cli/app.h"

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  return gantry::cli::run(std::vector<std::string>(argv + 1, argv + argc));
}
