#include "coordinator/server/handshake_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <utility>

namespace gantry::coordinator {

HandshakeGuard::HandshakeGuard(std::string socket_name, Limits limits, const Clock& clock, Refuse refuse)
    : name_(std::move(socket_name)), limits_(limits), clock_(clock), refuse_(std::move(refuse)) {}

void HandshakeGuard::accepted(int fd) {
  // A fd seen again was closed and reused: the newer connection replaces the older entry.
  conns_[fd] = Conn{clock_.now_ms(), next_seq_++};
}

void HandshakeGuard::disconnected(int fd) { conns_.erase(fd); }

void HandshakeGuard::proven(int fd) {
  if (!conns_.empty()) conns_.erase(fd);
}

void HandshakeGuard::expire(Millis now) {
  for (auto it = conns_.begin(); it != conns_.end();)
    it = now - it->second.since >= limits_.window_ms ? conns_.erase(it) : std::next(it);
}

size_t HandshakeGuard::unproven() {
  expire(clock_.now_ms());
  return conns_.size();
}

void HandshakeGuard::settle() {
  const Millis now = clock_.now_ms();
  expire(now);
  while (conns_.size() > limits_.max_unproven) {
    auto victim = conns_.end();
    if (limits_.evict_after_ms > 0)
      for (auto it = conns_.begin(); it != conns_.end(); ++it)
        if (now - it->second.since >= limits_.evict_after_ms &&
            (victim == conns_.end() || it->second.seq < victim->second.seq))
          victim = it;
    if (victim == conns_.end())
      for (auto it = conns_.begin(); it != conns_.end(); ++it)
        if (victim == conns_.end() || it->second.seq > victim->second.seq) victim = it;
    const int fd = victim->first;
    conns_.erase(victim);
    if (refuse_(fd)) ++refused_;
  }
}

bool shutdown_connection(int fd, int local_port) {
  int type = 0;
  socklen_t type_len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM) return false;
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
  int port = -1;
  if (local.ss_family == AF_INET) port = ntohs(reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
  if (local.ss_family == AF_INET6) port = ntohs(reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port);
  if (port != local_port) return false;
  sockaddr_storage peer{};
  len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return false;  // not a connection
  return shutdown(fd, SHUT_RDWR) == 0;
}

}  // namespace gantry::coordinator
