// The wire messages: one typed struct per message type. See PROTOCOL.md.
//
// The list of message types is append-only: a new need gets a new type, an
// existing number never changes meaning. Every struct here has already been
// validated by the codec (names, digests, ranges) when a handler sees it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace gantry::proto {

// Bumped only for incompatible changes; a peer with another version is refused at hello.
constexpr uint32_t kProtocolVersion = 1;

enum class MsgType : uint16_t {
  kHello = 1,       // agent -> coordinator
  kWelcome = 2,     // coordinator -> agent
  kHeartbeat = 3,   // both ways
  kOrder = 4,       // coordinator -> agent
  kOrderAck = 5,    // agent -> coordinator
  kFetchChunk = 6,  // agent -> coordinator
  kChunk = 7,       // coordinator -> agent
  kProgress = 8,    // agent -> coordinator
  kReport = 9,      // agent -> coordinator
  kError = 10,      // any direction
  kSignal = 11,     // coordinator PUB -> agents SUB
  kOpRequest = 12,  // operator -> coordinator
  kOpReply = 13,    // coordinator -> operator
};

// What one service on a host runs and is doing.
struct ServiceStatus {
  std::string name;
  std::string current_version;   // empty: nothing installed yet
  std::string previous_version;  // empty: none kept
  std::string state;             // "idle" | "updating" | "reverting"
  std::string order_id;          // order in progress, empty when idle
};

// Hello.capabilities bits (appended to protocol 1; an older agent sends none).
// The agent times the coordinator's liveness by Welcome.coordinator_heartbeat_ms, so the
// coordinator may heartbeat it that rarely instead of every heartbeat interval.
constexpr uint64_t kCapCoordinatorHeartbeat = 1;
// The agent can send its heartbeats as authenticated UDP datagrams (common/transport/
// udp_heartbeat.h, PROTOCOL.md §5.7) when its Welcome offers a session for them.
constexpr uint64_t kCapUdpHeartbeat = 2;

struct Hello {
  uint32_t protocol_version = kProtocolVersion;
  std::string host_id;
  std::string agent_version;
  std::map<std::string, std::string> labels;
  std::vector<ServiceStatus> services;
  uint64_t capabilities = 0;  // kCap* bits; optional on the wire (absent = 0)
};

struct Welcome {
  uint32_t protocol_version = kProtocolVersion;
  uint32_t heartbeat_interval_ms = 1000;  // the agent heartbeats when it sent nothing this long
  uint32_t heartbeat_misses = 3;          // silence of misses*interval makes a peer unknown
  uint64_t epoch = 0;                     // coordinator start counter; fencing for later HA
  // Optional (0 = not set: the coordinator heartbeats every heartbeat_interval_ms). Set only
  // for an agent whose hello had kCapCoordinatorHeartbeat: the coordinator sends it something
  // at least this often, and the agent gives the coordinator up after misses x this of silence.
  uint32_t coordinator_heartbeat_ms = 0;
  // Optional, all three or none (udp_session 0 = none): offered only to an agent whose hello
  // had kCapUdpHeartbeat. The agent may then heartbeat with datagrams to the host of its
  // coordinator endpoint at udp_port, session udp_session, authenticated with udp_key (32
  // random bytes, new for every Welcome; secret as far as the connection is: CURVE).
  uint32_t udp_port = 0;
  uint32_t udp_session = 0;
  std::string udp_key{};
};

struct Heartbeat {
  uint64_t seq = 0;
  // Optional, coordinator -> agent only, for a connection with a UDP heartbeat session:
  // udp_seq > 0 says the coordinator has accepted the session's datagrams up to that seq (the
  // agent may stop heartbeating over the connection); udp_lost says the datagrams stopped
  // arriving (the agent heartbeats over the connection again, and keeps sending datagrams).
  uint64_t udp_seq = 0;
  bool udp_lost = false;
  // Optional, agent -> coordinator only: the coordinator's heartbeat datagrams do not reach
  // this agent; heartbeat it over the connection for the rest of the session.
  bool udp_deaf = false;
  // Optional, agent -> coordinator only: whether the agent's SUB (Signals) is connected and
  // past its handshake: "up" | "down"; empty: not reported (an older agent).
  std::string signal_channel{};
};

// "Make `service` run `version`, verify it, and report." Used for updates and rollbacks alike.
struct Order {
  std::string order_id;
  uint64_t rollout_id = 0;
  std::string service;
  std::string kind;  // "update" | "rollback"
  std::string version;
  std::string sha256;                // of the release artifact (hex, 64 chars)
  uint64_t size = 0;                 // of the release artifact, bytes
  uint32_t min_healthy_ms = 0;       // 0: the agent's configured value
  uint32_t healthy_deadline_ms = 0;  // 0: the agent's configured value
  // Optional (added in protocol 1, append-only): the release's signed manifest, byte for byte,
  // and its ed25519 signature (hex). Empty for unsigned releases, which agents refuse unless
  // they run with insecure_dev and no release key.
  std::string manifest;
  std::string signature;
  // Optional (appended, issue 23): the epoch of the coordinator that SENT this order, stamped at
  // send time (a new leader resends an open order under its own epoch, same order_id). 0: not
  // sent (an older coordinator). Agents refuse an order whose epoch is below the highest they saw.
  uint64_t epoch = 0;
};

struct OrderAck {
  std::string order_id;
  std::string status;  // "accepted" | "duplicate" | "rejected"
  std::string message;
};

// Credit-based pull: the agent asks for the next chunk(s) of an artifact it needs.
struct FetchChunk {
  std::string sha256;
  uint64_t offset = 0;
  uint32_t length = 0;
};

struct Chunk {
  std::string sha256;
  uint64_t offset = 0;
  uint64_t total_size = 0;
  std::string data;  // raw bytes (msgpack bin)
};

struct Progress {
  std::string order_id;
  // "fetching" | "staging" | "swapping" | "restarting" | "verifying" | "reverting", and the
  // traffic steps "draining" | "waiting_inflight" | "allowing_traffic" | "traffic_allowed" |
  // "verifying_traffic" (PROTOCOL.md §4.8)
  std::string phase;
  std::string detail;
  uint64_t at_ms = 0;  // optional: agent wall clock (Unix ms) when the phase began; 0: not sent
};

struct Report {
  std::string order_id;
  uint64_t rollout_id = 0;
  std::string service;
  std::string outcome;  // "succeeded" | "failed_reverted" | "failed"
  std::string running_version;
  std::string message;
  std::map<std::string, uint64_t> timings_ms;  // phase -> duration
};

// The keys of ErrorMsg.leader: the leader coordinator's name and endpoints (LeaderInfo).
inline constexpr const char* kLeaderKeys[] = {"name", "agent", "pub", "operator", "http", "udp_heartbeat"};

struct ErrorMsg {
  std::string code;
  std::string message;
  uint16_t ref_type = 0;  // type of the message this answers, 0 if none
  std::string ref_id;     // e.g. an order id or request id
  // Optional (appended, issue 23), with code "not_leader": where the leader is. Keys from
  // kLeaderKeys only (others are dropped by the codec); values checked by the codec: name a
  // safe name, agent/pub/operator tcp://HOST:PORT, http http://HOST:PORT, udp_heartbeat
  // HOST:PORT; any value may be empty (not known). Empty map: no leader known right now.
  std::map<std::string, std::string> leader{};
};

// Fleet-wide fast path; losing it never matters because the same intent is also ordered per host.
struct Signal {
  std::string kind;  // "abort" | "rollback"
  uint64_t rollout_id = 0;
  std::string service;
  // Optional (appended, issue 23): the epoch of the coordinator that published it; 0: not sent.
  uint64_t epoch = 0;
};

// Operator request; `args` is a map whose shape depends on `command` (see PROTOCOL.md).
struct OpRequest {
  std::string request_id;
  std::string command;
  nlohmann::json args = nlohmann::json::object();
};

struct OpReply {
  std::string request_id;
  bool ok = false;
  std::string error;
  nlohmann::json result;  // null on error
  // Optional (appended, issue 23), with ok false: a machine-readable reason; "not_leader" from a
  // standby, which then names the leader in `leader` (same keys and checks as ErrorMsg.leader)
  // so the client can ask there. Empty: not sent.
  std::string error_code{};
  std::map<std::string, std::string> leader{};
};

using Message = std::variant<Hello, Welcome, Heartbeat, Order, OrderAck, FetchChunk, Chunk, Progress, Report, ErrorMsg,
                             Signal, OpRequest, OpReply>;

MsgType type_of(const Message& m);
const char* type_name(MsgType t);

}  // namespace gantry::proto
