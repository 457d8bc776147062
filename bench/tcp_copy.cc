// The release-distribution baseline (bench/run distribution): a plain TCP copy of one file to
// N receivers. copy-send accepts N connections, then serves the whole file to all of them at
// once from one thread (epoll, non-blocking sendfile(2) from the page cache, each connection at
// its own offset). Each copy-recv process opens one connection, writes what it reads to its own
// file with write(2) in 256 KiB reads (the agent's chunk size) and fsyncs at the end, as the
// agent's fetcher does. No framing, no protocol, no digest: the floor for moving the bytes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "bench/sim_common.h"

namespace po = boost::program_options;

namespace gantry::bench {
namespace {}  // namespace

int run_copy_send(int argc, char** argv) {
  std::string file;
  int conns = 100, timeout_s = 300;
  po::options_description desc(
      "gantry-fleet-sim copy-send: serve one file to N TCP receivers at once (sendfile).\nOptions");
  desc.add_options()("help,h", "show this help")("file", po::value(&file)->required(), "the file to serve")(
      "conns", po::value(&conns)->default_value(conns), "accept this many connections, then send")(
      "timeout-s", po::value(&timeout_s)->default_value(timeout_s), "give up after this long");
  po::variables_map vm;
  if (!parse_opts(desc, argc, argv, vm, "copy-send")) return vm.count("help") ? 0 : 2;
  std::signal(SIGPIPE, SIG_IGN);
  int in = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (in < 0 || ::fstat(in, &st) != 0) {
    std::perror("copy-send: open");
    return 1;
  }
  const off_t size = st.st_size;
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = parse_addr("127.0.0.1:0");
  if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 4096) != 0) {
    std::perror("copy-send: bind/listen");
    return 1;
  }
  socklen_t len = sizeof a;
  getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len);
  emit({{"ev", "bound"}, {"port", ntohs(a.sin_port)}});
  const int64_t deadline = mono_ms() + static_cast<int64_t>(timeout_s) * 1000;
  std::vector<int> fds;
  while (static_cast<int>(fds.size()) < conns && mono_ms() < deadline) {
    pollfd p{ls, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(ls, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    fds.push_back(fd);
  }
  ::close(ls);
  if (static_cast<int>(fds.size()) < conns) {
    emit({{"ev", "error"}, {"message", "only " + std::to_string(fds.size()) + " receivers connected"}});
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<off_t> at(fds.size(), 0);
  for (size_t i = 0; i < fds.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  const int64_t t0 = wall_us();
  emit({{"ev", "start"}, {"t0_us", t0}, {"conns", fds.size()}, {"bytes", size}});
  size_t left = fds.size(), failed = 0;
  std::vector<epoll_event> evs(256);
  while (left > 0 && mono_ms() < deadline) {
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 100);
    for (int k = 0; k < n; ++k) {
      size_t i = evs[k].data.u64;
      // Level-triggered: write until the socket is full, epoll says when it has room again.
      for (;;) {
        ssize_t w = ::sendfile(fds[i], in, &at[i], static_cast<size_t>(size - at[i]));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EAGAIN) failed++;
        if ((w < 0 && errno != EAGAIN) || at[i] == size) {
          epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], nullptr);
          ::shutdown(fds[i], SHUT_WR);
          left--;
        }
        break;
      }
    }
  }
  emit({{"ev", "sent"}, {"t0_us", t0}, {"t1_us", wall_us()}, {"unfinished", left}, {"failed", failed}});
  for (int fd : fds) ::close(fd);
  ::close(ep);
  ::close(in);
  return left == 0 && failed == 0 ? 0 : 1;
}

int run_copy_recv(int argc, char** argv) {
  std::string connect_addr, out;
  int timeout_s = 300;
  po::options_description desc(
      "gantry-fleet-sim copy-recv: one TCP receiver for copy-send, writing to a file.\nOptions");
  desc.add_options()("help,h", "show this help")("connect", po::value(&connect_addr)->required(),
                                                 "HOST:PORT of copy-send")("out", po::value(&out)->required(),
                                                                           "write the bytes here (fsync at the end)")(
      "timeout-s", po::value(&timeout_s)->default_value(timeout_s), "give up after this long");
  po::variables_map vm;
  if (!parse_opts(desc, argc, argv, vm, "copy-recv")) return vm.count("help") ? 0 : 2;
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = parse_addr(connect_addr);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror("copy-recv: connect");
    return 1;
  }
  timeval tv{timeout_s, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror("copy-recv: open");
    return 1;
  }
  std::vector<char> buf(256 * 1024);
  uint64_t total = 0;
  int64_t first_us = 0;
  for (;;) {
    ssize_t n = ::read(s, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF (the sender shut down its side) or timeout
    if (!first_us) first_us = wall_us();
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::write(fd, buf.data() + off, static_cast<size_t>(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        std::perror("copy-recv: write");
        return 1;
      }
      off += w;
    }
    total += static_cast<uint64_t>(n);
  }
  bool ok = ::fsync(fd) == 0;
  emit({{"ev", "done"}, {"t_us", wall_us()}, {"first_us", first_us}, {"bytes", total}, {"fsync_ok", ok}});
  ::close(fd);
  ::close(s);
  return ok ? 0 : 1;
}

}  // namespace gantry::bench
