// ZeroMQ helpers shared by the daemons and the CLI: socket options, framing, send/recv.
#pragma once

#include <zmq.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/protocol/messages.h"
#include "common/util/expected.h"

namespace gantry::transport {

// CurveZMQ settings for one socket (Z85 keys, 40 chars). Empty keys mean plaintext,
// which the daemons allow only with --insecure-dev.
struct CurveOptions {
  bool server = false;            // true on the coordinator's ROUTER/PUB
  std::string public_key;         // this socket's public key
  std::string secret_key;         // this socket's secret key
  std::string server_public_key;  // for clients: the pinned coordinator key
  std::string zap_domain = "gantry";
  bool enabled() const { return !secret_key.empty(); }
};

// Options every Gantry socket sets; bounded so no peer can make us buffer without limit.
struct SocketOptions {
  int send_hwm = 10000;
  int recv_hwm = 10000;
  int64_t max_msg_size = 4 * 1024 * 1024;
  int linger_ms = 0;
  int reconnect_ivl_ms = 100;       // first reconnect delay
  int reconnect_ivl_max_ms = 5000;  // exponential backoff cap
  int handshake_ivl_ms = 0;         // ZMQ_HANDSHAKE_IVL: a handshake unfinished by then ends (0: libzmq's 30 s)
  int backlog = 0;                  // listen backlog of bound sockets (0: libzmq's 100); a
                                    // reconnect storm of thousands of agents needs more
  bool router_mandatory = false;    // ROUTER: error instead of silent drop for unknown peers
  bool router_handover = false;     // ROUTER: a reconnecting peer with the same id takes over
  std::string routing_id;           // DEALER: our identity (empty: random)
  CurveOptions curve;
};

// Applies options before bind/connect.
void configure(zmq::socket_t& s, const SocketOptions& o);

// An endpoint a Gantry client (agent, CLI) may connect to: tcp://HOST:PORT, HOST a DNS name, an
// IPv4 address or a bracketed IPv6 address, PORT 1-65535. Checked where it is configured, so a
// typo is a config error naming the value (libzmq would throw from connect, or for pgm:// and
// norm:// abort in the agent, which is linked without them).
Status check_connect_endpoint(const std::string& endpoint);

// HOST:PORT split at its last colon, HOST without the brackets of an [IPv6] literal; nullopt
// without a colon. tcp_host_port does the same for tcp://[SOURCE;]HOST:PORT (nullopt if not tcp://).
struct HostPort {
  std::string host, port;
  bool ipv6_literal = false;
};
std::optional<HostPort> split_host_port(std::string_view host_port);
std::optional<HostPort> tcp_host_port(std::string_view endpoint);

// connect / bind that name the endpoint in their error instead of throwing.
Status connect(zmq::socket_t& s, const std::string& endpoint);
Status bind(zmq::socket_t& s, const std::string& endpoint);

// Context settings every Gantry process uses, before its first socket: received frames are
// copied out of the engine's 8 KiB read buffer instead of referencing it (ZMQ_ZERO_COPY_RECV
// off). Zero-copy would pin that buffer and a per-buffer table of message refcounts (~10 KiB)
// in every connection; our messages are small or go to a file, so the copy costs nothing.
void configure_context(zmq::context_t& ctx);

// One frame from a ROUTER: who sent it and the payload. user_id is the
// ZAP-authenticated identity (the key's name) when CURVE is on.
struct Incoming {
  std::string identity;
  std::string payload;
  std::string user_id;
  // The connection's file descriptor (ZMQ_SRCFD; -1 if unknown): a message from it proves its
  // handshake is over (coordinator/server/handshake_guard.h).
  int source_fd = -1;
};

// Sends on a ROUTER to `identity`. Never blocks; an unreachable peer or full queue is an Error.
Status send_to(zmq::socket_t& router, std::string_view identity, const proto::Message& m);
Status send_raw_to(zmq::socket_t& router, std::string_view identity, std::string_view bytes);
// Sends a frame built in place (e.g. artifact bytes read straight into it): no copy.
Status send_msg_to(zmq::socket_t& router, std::string_view identity, zmq::message_t&& payload);

// Sends on a DEALER/PUB. Never blocks; a full queue is an Error.
Status send(zmq::socket_t& s, const proto::Message& m);

// Non-blocking receive of one routed message (identity + one payload frame).
// Messages with another frame layout are read whole and dropped (returned as nullopt
// with `dropped` set), so a hostile peer cannot desynchronise the framing.
std::optional<Incoming> recv_routed(zmq::socket_t& router, bool* dropped = nullptr);

// Non-blocking receive of a one-frame message (DEALER/SUB side).
std::optional<std::string> recv_frame(zmq::socket_t& s, bool* dropped = nullptr);
// The same into `msg` without copying it out (a Chunk's 256 KiB stays in the frame): true when
// one single-frame message was received; false when none was waiting, or (with *dropped set)
// when a multi-frame message was received and dropped.
bool recv_frame_msg(zmq::socket_t& s, zmq::message_t& msg, bool* dropped = nullptr);

// Reads the events waiting on a socket monitor's PAIR end (zmq_socket_monitor; at most `max`,
// without blocking); true if `event` (e.g. ZMQ_EVENT_DISCONNECTED) was among them.
bool monitor_saw(zmq::socket_t& monitor, uint16_t event, int max = 16);

}  // namespace gantry::transport
