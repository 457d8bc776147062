#include "common/protocol/codec.h"

#include <msgpack.hpp>

#include <cctype>
#include <stdexcept>
#include <unordered_map>

#include "common/util/endpoint.h"
#include "common/util/names.h"
#include "common/util/text.h"

namespace gantry::proto {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

// Thrown only inside this file and turned into an Error at decode()'s boundary.
struct Invalid : std::runtime_error {
  std::string code;
  Invalid(std::string c, const std::string& what) : std::runtime_error(what), code(std::move(c)) {}
};

void key(Packer& p, std::string_view k) {
  p.pack_str(k.size());
  p.pack_str_body(k.data(), k.size());
}
void str(Packer& p, std::string_view v) {
  p.pack_str(v.size());
  p.pack_str_body(v.data(), v.size());
}
void kv(Packer& p, std::string_view k, std::string_view v) {
  key(p, k);
  str(p, v);
}
void kv(Packer& p, std::string_view k, uint64_t v) {
  key(p, k);
  p.pack_uint64(v);
}
void kvb(Packer& p, std::string_view k, bool v) {
  key(p, k);
  if (v)
    p.pack_true();
  else
    p.pack_false();
}
void kvjson(Packer& p, msgpack::sbuffer& buf, std::string_view k, const nlohmann::json& j) {
  key(p, k);
  std::vector<uint8_t> raw = nlohmann::json::to_msgpack(j);
  buf.write(reinterpret_cast<const char*>(raw.data()), raw.size());
}

void pack_services(Packer& p, const std::vector<ServiceStatus>& svcs) {
  p.pack_array(svcs.size());
  for (const auto& s : svcs) {
    p.pack_map(5);
    kv(p, "name", s.name);
    kv(p, "current_version", s.current_version);
    kv(p, "previous_version", s.previous_version);
    kv(p, "state", s.state);
    kv(p, "order_id", s.order_id);
  }
}

void pack_body(Packer& p, msgpack::sbuffer& buf, const Message& m) {
  std::visit(
      [&](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, Hello>) {
          // Optional fields appended to protocol 1 are written only when set, so a message
          // without them is byte for byte what older peers send.
          p.pack_map(b.capabilities ? 6 : 5);
          kv(p, "protocol_version", b.protocol_version);
          kv(p, "host_id", b.host_id);
          kv(p, "agent_version", b.agent_version);
          key(p, "labels");
          p.pack_map(b.labels.size());
          for (const auto& [k, v] : b.labels) kv(p, k, v);
          key(p, "services");
          pack_services(p, b.services);
          if (b.capabilities) kv(p, "capabilities", b.capabilities);
        } else if constexpr (std::is_same_v<T, Welcome>) {
          const bool udp = b.udp_session != 0;
          p.pack_map(4 + (b.coordinator_heartbeat_ms ? 1 : 0) + (udp ? 3 : 0));
          kv(p, "protocol_version", b.protocol_version);
          kv(p, "heartbeat_interval_ms", b.heartbeat_interval_ms);
          kv(p, "heartbeat_misses", b.heartbeat_misses);
          kv(p, "epoch", b.epoch);
          if (b.coordinator_heartbeat_ms) kv(p, "coordinator_heartbeat_ms", b.coordinator_heartbeat_ms);
          if (udp) {
            kv(p, "udp_port", b.udp_port);
            kv(p, "udp_session", b.udp_session);
            key(p, "udp_key");
            p.pack_bin(static_cast<uint32_t>(b.udp_key.size()));
            p.pack_bin_body(b.udp_key.data(), b.udp_key.size());
          }
        } else if constexpr (std::is_same_v<T, Heartbeat>) {
          p.pack_map(1 + (b.udp_seq ? 1 : 0) + (b.udp_lost ? 1 : 0) + (b.udp_deaf ? 1 : 0) +
                     (b.signal_channel.empty() ? 0 : 1));
          kv(p, "seq", b.seq);
          if (b.udp_seq) kv(p, "udp_seq", b.udp_seq);
          if (b.udp_lost) kvb(p, "udp_lost", true);
          if (b.udp_deaf) kvb(p, "udp_deaf", true);
          if (!b.signal_channel.empty()) kv(p, "signal_channel", b.signal_channel);
        } else if constexpr (std::is_same_v<T, Order>) {
          const bool signed_release = !b.manifest.empty() || !b.signature.empty();
          p.pack_map((signed_release ? 11 : 9) + (b.epoch ? 1 : 0));
          kv(p, "order_id", b.order_id);
          kv(p, "rollout_id", b.rollout_id);
          kv(p, "service", b.service);
          kv(p, "kind", b.kind);
          kv(p, "version", b.version);
          kv(p, "sha256", b.sha256);
          kv(p, "size", b.size);
          kv(p, "min_healthy_ms", b.min_healthy_ms);
          kv(p, "healthy_deadline_ms", b.healthy_deadline_ms);
          if (signed_release) {
            kv(p, "manifest", b.manifest);
            kv(p, "signature", b.signature);
          }
          if (b.epoch) kv(p, "epoch", b.epoch);
        } else if constexpr (std::is_same_v<T, OrderAck>) {
          p.pack_map(3);
          kv(p, "order_id", b.order_id);
          kv(p, "status", b.status);
          kv(p, "message", b.message);
        } else if constexpr (std::is_same_v<T, FetchChunk>) {
          p.pack_map(3);
          kv(p, "sha256", b.sha256);
          kv(p, "offset", b.offset);
          kv(p, "length", b.length);
        } else if constexpr (std::is_same_v<T, Chunk>) {
          p.pack_map(4);
          kv(p, "sha256", b.sha256);
          kv(p, "offset", b.offset);
          kv(p, "total_size", b.total_size);
          key(p, "data");
          p.pack_bin(b.data.size());
          p.pack_bin_body(b.data.data(), b.data.size());
        } else if constexpr (std::is_same_v<T, Progress>) {
          p.pack_map(b.at_ms ? 4 : 3);
          kv(p, "order_id", b.order_id);
          kv(p, "phase", b.phase);
          kv(p, "detail", b.detail);
          if (b.at_ms) kv(p, "at_ms", b.at_ms);
        } else if constexpr (std::is_same_v<T, Report>) {
          p.pack_map(7);
          kv(p, "order_id", b.order_id);
          kv(p, "rollout_id", b.rollout_id);
          kv(p, "service", b.service);
          kv(p, "outcome", b.outcome);
          kv(p, "running_version", b.running_version);
          kv(p, "message", b.message);
          key(p, "timings_ms");
          p.pack_map(b.timings_ms.size());
          for (const auto& [k, v] : b.timings_ms) kv(p, k, v);
        } else if constexpr (std::is_same_v<T, ErrorMsg>) {
          // An empty leader map is not written (older peers' bytes); absent decodes as empty.
          p.pack_map(b.leader.empty() ? 4 : 5);
          kv(p, "code", b.code);
          kv(p, "message", b.message);
          kv(p, "ref_type", b.ref_type);
          kv(p, "ref_id", b.ref_id);
          if (!b.leader.empty()) {
            key(p, "leader");
            p.pack_map(b.leader.size());
            for (const auto& [k, v] : b.leader) kv(p, k, v);
          }
        } else if constexpr (std::is_same_v<T, Signal>) {
          p.pack_map(b.epoch ? 4 : 3);
          kv(p, "kind", b.kind);
          kv(p, "rollout_id", b.rollout_id);
          kv(p, "service", b.service);
          if (b.epoch) kv(p, "epoch", b.epoch);
        } else if constexpr (std::is_same_v<T, OpRequest>) {
          p.pack_map(3);
          kv(p, "request_id", b.request_id);
          kv(p, "command", b.command);
          kvjson(p, buf, "args", b.args);
        } else if constexpr (std::is_same_v<T, OpReply>) {
          p.pack_map(4 + (b.error_code.empty() ? 0 : 1) + (b.leader.empty() ? 0 : 1));
          kv(p, "request_id", b.request_id);
          kvb(p, "ok", b.ok);
          kv(p, "error", b.error);
          kvjson(p, buf, "result", b.result);
          if (!b.error_code.empty()) kv(p, "error_code", b.error_code);
          if (!b.leader.empty()) {
            key(p, "leader");
            p.pack_map(b.leader.size());
            for (const auto& [k, v] : b.leader) kv(p, k, v);
          }
        }
      },
      m);
}

// ---- decoding ---------------------------------------------------------------

// A msgpack map with string keys, looked up by name; duplicate keys are refused.
class Fields {
 public:
  Fields(const msgpack::object& o, const char* what) : what_(what) {
    if (o.type != msgpack::type::MAP) throw Invalid("invalid", std::string(what) + ": not a map");
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kvp = o.via.map.ptr[i];
      if (kvp.key.type != msgpack::type::STR) throw Invalid("invalid", std::string(what) + ": non-string key");
      std::string_view k(kvp.key.via.str.ptr, kvp.key.via.str.size);
      if (!m_.emplace(k, &kvp.val).second)
        throw Invalid("invalid", std::string(what) + ": duplicate key " + safe_text(k, 64));
    }
  }
  const msgpack::object* find(std::string_view k) const {
    auto it = m_.find(k);
    return it == m_.end() ? nullptr : it->second;
  }
  const msgpack::object& need(std::string_view k) const {
    auto* o = find(k);
    if (!o) throw Invalid("invalid", std::string(what_) + ": missing field " + std::string(k));
    return *o;
  }
  // Strings: required unless a default is acceptable (missing -> "").
  std::string s(std::string_view k, bool required = true, std::size_t max = 4096) const {
    auto* o = find(k);
    if (!o) {
      if (required) throw Invalid("invalid", std::string(what_) + ": missing field " + std::string(k));
      return {};
    }
    if (o->type != msgpack::type::STR)
      throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " is not a string");
    if (o->via.str.size > max) throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " too long");
    return std::string(o->via.str.ptr, o->via.str.size);
  }
  // Free text a person reads (messages, versions of agents, details): any bytes are accepted and
  // made safe here, where they enter (common/util/text.h), so nothing downstream (the store,
  // JSON views, logs, terminals) sees invalid UTF-8 or a control character from a peer.
  std::string text(std::string_view k, bool required = true, std::size_t max = 4096) const {
    return safe_text(s(k, required, max), max);
  }
  uint64_t u(std::string_view k, bool required = true, uint64_t max = UINT64_MAX) const {
    auto* o = find(k);
    if (!o) {
      if (required) throw Invalid("invalid", std::string(what_) + ": missing field " + std::string(k));
      return 0;
    }
    if (o->type != msgpack::type::POSITIVE_INTEGER)
      throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " is not an unsigned integer");
    if (o->via.u64 > max) throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " out of range");
    return o->via.u64;
  }
  bool b(std::string_view k) const {
    auto& o = need(k);
    if (o.type != msgpack::type::BOOLEAN)
      throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " is not a boolean");
    return o.via.boolean;
  }
  std::string name(std::string_view k, bool allow_empty = false) const {
    std::string v = s(k, !allow_empty, 128);
    if (v.empty() && allow_empty) return v;
    if (!is_safe_name(v))
      throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " is not a safe name");
    return v;
  }
  std::string sha(std::string_view k) const {
    std::string v = s(k, true, 64);
    if (!is_sha256_hex(v))
      throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " is not a sha256 hex digest");
    return v;
  }
  std::string oneof(std::string_view k, std::initializer_list<std::string_view> allowed,
                    bool allow_empty = false) const {
    std::string v = s(k, !allow_empty, 64);
    if (v.empty() && allow_empty) return v;
    for (auto a : allowed)
      if (v == a) return v;
    throw Invalid("invalid", std::string(what_) + ": field " + std::string(k) + " has unknown value '" + v + "'");
  }

 private:
  const char* what_;
  std::unordered_map<std::string_view, const msgpack::object*> m_;
};

// Every string in `j` (keys and values, at any depth) made safe text: operator arguments end up
// in the store, the audit table, logs and JSON views, and nlohmann's dump() throws on invalid UTF-8.
void make_strings_safe(nlohmann::json& j) {
  if (j.is_string()) {
    auto& v = j.get_ref<std::string&>();
    if (!is_safe_text(v)) v = safe_text(v);
  } else if (j.is_array()) {
    for (auto& e : j) make_strings_safe(e);
  } else if (j.is_object()) {
    bool keys_safe = true;
    for (auto it = j.begin(); it != j.end(); ++it) keys_safe = keys_safe && is_safe_text(it.key());
    if (!keys_safe) {
      nlohmann::json fixed = nlohmann::json::object();
      for (auto it = j.begin(); it != j.end(); ++it) fixed[safe_text(it.key(), 256)] = std::move(it.value());
      j = std::move(fixed);
    }
    for (auto& [k, v] : j.items()) make_strings_safe(v);
  }
}

nlohmann::json to_json(const msgpack::object& o) {
  msgpack::sbuffer sb;
  msgpack::pack(sb, o);
  // The outer unpack already enforced depth and size limits.
  nlohmann::json j = nlohmann::json::from_msgpack(reinterpret_cast<const uint8_t*>(sb.data()),
                                                  reinterpret_cast<const uint8_t*>(sb.data()) + sb.size());
  make_strings_safe(j);
  return j;
}

std::vector<ServiceStatus> services(const msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY) throw Invalid("invalid", "hello: services is not an array");
  if (o.via.array.size > 256) throw Invalid("invalid", "hello: too many services");
  std::vector<ServiceStatus> out;
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    Fields f(o.via.array.ptr[i], "service status");
    ServiceStatus s;
    s.name = f.name("name");
    s.current_version = f.name("current_version", true);
    s.previous_version = f.name("previous_version", true);
    s.state = f.oneof("state", {"idle", "updating", "reverting"});
    s.order_id = f.name("order_id", true);
    out.push_back(std::move(s));
  }
  return out;
}

// ErrorMsg.leader and OpReply.leader (`what` names the message in errors): a small map of the known keys
// (proto::kLeaderKeys) to checked values; keys another version may add are dropped. A value that is not what its key
// says is refused.
std::map<std::string, std::string> leader_map(const msgpack::object& o, const std::string& what) {
  if (o.type != msgpack::type::MAP || o.via.map.size > 16)
    throw Invalid("invalid", what + ": leader must be a map of at most 16 entries");
  std::map<std::string, std::string> out;
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kvp = o.via.map.ptr[i];
    if (kvp.key.type != msgpack::type::STR || kvp.val.type != msgpack::type::STR)
      throw Invalid("invalid", what + ": leader must map strings to strings");
    const std::string_view k(kvp.key.via.str.ptr, kvp.key.via.str.size);
    if (kvp.val.via.str.size > kMaxEndpointLength)
      throw Invalid("invalid", what + ": leader." + safe_text(k, 64) + " too long");
    const std::string v(kvp.val.via.str.ptr, kvp.val.via.str.size);
    Status st = Status::Ok();
    if (k == "name") {
      if (!v.empty() && !is_safe_name(v)) throw Invalid("invalid", what + ": leader.name is not a safe name");
    } else if (k == "agent" || k == "pub" || k == "operator") {
      if (!v.empty()) st = check_tcp_endpoint(v);
    } else if (k == "http") {
      if (!v.empty()) st = check_http_endpoint(v);
    } else if (k == "udp_heartbeat") {
      if (!v.empty()) st = check_host_port(v);
    } else {
      continue;
    }
    if (!st.ok()) throw Invalid("invalid", what + ": leader." + std::string(k) + ": " + st.error().message);
    if (!out.emplace(std::string(k), v).second)
      throw Invalid("invalid", what + ": leader: duplicate key " + std::string(k));
  }
  return out;
}

ChunkView chunk_of(const msgpack::object& body) {
  Fields f(body, "chunk");
  ChunkView c;
  c.sha256 = f.sha("sha256");
  c.offset = f.u("offset", true, 1ULL << 40);
  c.total_size = f.u("total_size", true, 1ULL << 40);
  const auto& d = f.need("data");
  if (d.type != msgpack::type::BIN) throw Invalid("invalid", "chunk: data is not bin");
  if (d.via.bin.size > kMaxChunkBytes) throw Invalid("limit", "chunk: data larger than a chunk");
  c.data = std::string_view(d.via.bin.ptr, d.via.bin.size);
  if (c.offset + c.data.size() > c.total_size) throw Invalid("invalid", "chunk: data past total_size");
  return c;
}

Message body_of(MsgType t, const msgpack::object& body) {
  switch (t) {
    case MsgType::kHello: {
      Fields f(body, "hello");
      Hello h;
      h.protocol_version = static_cast<uint32_t>(f.u("protocol_version", true, UINT32_MAX));
      h.host_id = f.name("host_id");
      h.agent_version = f.text("agent_version", false, 64);
      const auto& labels = f.need("labels");
      if (labels.type != msgpack::type::MAP || labels.via.map.size > 64)
        throw Invalid("invalid", "hello: labels must be a map of at most 64 entries");
      for (uint32_t i = 0; i < labels.via.map.size; ++i) {
        const auto& kvp = labels.via.map.ptr[i];
        if (kvp.key.type != msgpack::type::STR || kvp.val.type != msgpack::type::STR)
          throw Invalid("invalid", "hello: labels must map strings to strings");
        std::string k(kvp.key.via.str.ptr, kvp.key.via.str.size), v(kvp.val.via.str.ptr, kvp.val.via.str.size);
        if (!is_label_token(k, false) || !is_label_token(v, true))
          throw Invalid("invalid", "hello: bad label " + safe_text(k, 64));
        h.labels[k] = v;
      }
      h.services = services(f.need("services"));
      h.capabilities = f.u("capabilities", false);  // unknown bits are ignored
      return h;
    }
    case MsgType::kWelcome: {
      Fields f(body, "welcome");
      Welcome w;
      w.protocol_version = static_cast<uint32_t>(f.u("protocol_version", true, UINT32_MAX));
      w.heartbeat_interval_ms = static_cast<uint32_t>(f.u("heartbeat_interval_ms", true, 3600000));
      w.heartbeat_misses = static_cast<uint32_t>(f.u("heartbeat_misses", true, 1000));
      w.epoch = f.u("epoch");
      w.coordinator_heartbeat_ms = static_cast<uint32_t>(f.u("coordinator_heartbeat_ms", false, 3600000));
      if (w.heartbeat_interval_ms == 0 || w.heartbeat_misses == 0)
        throw Invalid("invalid", "welcome: zero heartbeat settings");
      w.udp_session = static_cast<uint32_t>(f.u("udp_session", false, UINT32_MAX));
      if (w.udp_session != 0) {
        w.udp_port = static_cast<uint32_t>(f.u("udp_port", true, 65535));
        const auto& k = f.need("udp_key");
        if (k.type != msgpack::type::BIN || k.via.bin.size != 32)
          throw Invalid("invalid", "welcome: udp_key must be 32 bytes (bin)");
        if (w.udp_port == 0) throw Invalid("invalid", "welcome: udp_port 0 with a udp_session");
        w.udp_key.assign(k.via.bin.ptr, k.via.bin.size);
      }
      return w;
    }
    case MsgType::kHeartbeat: {
      Fields f(body, "heartbeat");
      Heartbeat h{f.u("seq")};
      h.udp_seq = f.u("udp_seq", false);
      if (f.find("udp_lost")) h.udp_lost = f.b("udp_lost");
      if (f.find("udp_deaf")) h.udp_deaf = f.b("udp_deaf");
      h.signal_channel = f.oneof("signal_channel", {"up", "down"}, true);
      return h;
    }
    case MsgType::kOrder: {
      Fields f(body, "order");
      Order o;
      o.order_id = f.name("order_id");
      o.rollout_id = f.u("rollout_id");
      o.service = f.name("service");
      o.kind = f.oneof("kind", {"update", "rollback"});
      o.version = f.name("version");
      o.sha256 = f.sha("sha256");
      o.size = f.u("size", true, 1ULL << 40);
      o.min_healthy_ms = static_cast<uint32_t>(f.u("min_healthy_ms", false, 24 * 3600 * 1000));
      o.healthy_deadline_ms = static_cast<uint32_t>(f.u("healthy_deadline_ms", false, 24 * 3600 * 1000));
      o.manifest = f.s("manifest", false, 4096);
      o.signature = f.s("signature", false, 128);
      for (char ch : o.signature)
        if (!std::isxdigit(static_cast<unsigned char>(ch))) throw Invalid("invalid", "order: signature is not hex");
      o.epoch = f.u("epoch", false);
      return o;
    }
    case MsgType::kOrderAck: {
      Fields f(body, "order ack");
      OrderAck a;
      a.order_id = f.name("order_id");
      a.status = f.oneof("status", {"accepted", "duplicate", "rejected"});
      a.message = f.text("message", false);
      return a;
    }
    case MsgType::kFetchChunk: {
      Fields f(body, "fetch chunk");
      FetchChunk c;
      c.sha256 = f.sha("sha256");
      c.offset = f.u("offset", true, 1ULL << 40);
      c.length = static_cast<uint32_t>(f.u("length", true, kMaxChunkBytes));
      if (c.length == 0) throw Invalid("invalid", "fetch chunk: zero length");
      return c;
    }
    case MsgType::kChunk: {
      ChunkView v = chunk_of(body);
      return Chunk{std::move(v.sha256), v.offset, v.total_size, std::string(v.data)};
    }
    case MsgType::kProgress: {
      Fields f(body, "progress");
      Progress p;
      p.order_id = f.name("order_id");
      p.phase = f.oneof("phase", {"fetching", "staging", "swapping", "restarting", "verifying", "reverting", "draining",
                                  "waiting_inflight", "allowing_traffic", "traffic_allowed", "verifying_traffic"});
      p.detail = f.text("detail", false);
      p.at_ms = f.u("at_ms", false);
      return p;
    }
    case MsgType::kReport: {
      Fields f(body, "report");
      Report r;
      r.order_id = f.name("order_id");
      r.rollout_id = f.u("rollout_id");
      r.service = f.name("service");
      r.outcome = f.oneof("outcome", {"succeeded", "failed_reverted", "failed"});
      r.running_version = f.name("running_version", true);
      r.message = f.text("message", false);
      if (auto* t = f.find("timings_ms")) {
        if (t->type != msgpack::type::MAP || t->via.map.size > 32)
          throw Invalid("invalid", "report: timings_ms must be a small map");
        for (uint32_t i = 0; i < t->via.map.size; ++i) {
          const auto& kvp = t->via.map.ptr[i];
          if (kvp.key.type != msgpack::type::STR || kvp.val.type != msgpack::type::POSITIVE_INTEGER ||
              kvp.key.via.str.size > 64)
            throw Invalid("invalid", "report: timings_ms must map names to unsigned integers");
          r.timings_ms[std::string(kvp.key.via.str.ptr, kvp.key.via.str.size)] = kvp.val.via.u64;
        }
      }
      return r;
    }
    case MsgType::kError: {
      Fields f(body, "error");
      ErrorMsg e;
      e.code = f.text("code", true, 64);
      e.message = f.text("message", false);
      e.ref_type = static_cast<uint16_t>(f.u("ref_type", false, UINT16_MAX));
      e.ref_id = f.text("ref_id", false, 256);
      if (const auto* l = f.find("leader")) e.leader = leader_map(*l, "error");
      return e;
    }
    case MsgType::kSignal: {
      Fields f(body, "signal");
      Signal s;
      s.kind = f.oneof("kind", {"abort", "rollback"});
      s.rollout_id = f.u("rollout_id");
      s.service = f.name("service");
      s.epoch = f.u("epoch", false);
      return s;
    }
    case MsgType::kOpRequest: {
      Fields f(body, "op request");
      OpRequest r;
      r.request_id = f.text("request_id", true, 128);
      r.command = f.text("command", true, 64);
      const auto& a = f.need("args");
      if (a.type != msgpack::type::MAP) throw Invalid("invalid", "op request: args is not a map");
      r.args = to_json(a);
      return r;
    }
    case MsgType::kOpReply: {
      Fields f(body, "op reply");
      OpReply r;
      r.request_id = f.text("request_id", true, 128);
      r.ok = f.b("ok");
      r.error = f.text("error", false);
      r.result = to_json(f.need("result"));
      r.error_code = f.text("error_code", false, 64);
      if (const auto* l = f.find("leader")) r.leader = leader_map(*l, "op reply");
      return r;
    }
  }
  throw Invalid("unknown_type", "unknown message type " + std::to_string(static_cast<int>(t)));
}

}  // namespace

MsgType type_of(const Message& m) {
  static constexpr MsgType kTypes[] = {
      MsgType::kHello,      MsgType::kWelcome,   MsgType::kHeartbeat, MsgType::kOrder,  MsgType::kOrderAck,
      MsgType::kFetchChunk, MsgType::kChunk,     MsgType::kProgress,  MsgType::kReport, MsgType::kError,
      MsgType::kSignal,     MsgType::kOpRequest, MsgType::kOpReply};
  return kTypes[m.index()];
}

const char* type_name(MsgType t) {
  switch (t) {
    case MsgType::kHello:
      return "hello";
    case MsgType::kWelcome:
      return "welcome";
    case MsgType::kHeartbeat:
      return "heartbeat";
    case MsgType::kOrder:
      return "order";
    case MsgType::kOrderAck:
      return "order_ack";
    case MsgType::kFetchChunk:
      return "fetch_chunk";
    case MsgType::kChunk:
      return "chunk";
    case MsgType::kProgress:
      return "progress";
    case MsgType::kReport:
      return "report";
    case MsgType::kError:
      return "error";
    case MsgType::kSignal:
      return "signal";
    case MsgType::kOpRequest:
      return "op_request";
    case MsgType::kOpReply:
      return "op_reply";
  }
  return "unknown";
}

std::string encode_chunk_head(std::string_view sha256, uint64_t offset, uint64_t total_size, std::size_t data_len) {
  // Same keys, order and encodings as pack_body's Chunk, minus the data bytes themselves.
  msgpack::sbuffer buf(128);
  Packer p(&buf);
  p.pack_map(2);
  kv(p, "t", static_cast<uint64_t>(MsgType::kChunk));
  key(p, "b");
  p.pack_map(4);
  kv(p, "sha256", sha256);
  kv(p, "offset", offset);
  kv(p, "total_size", total_size);
  key(p, "data");
  p.pack_bin(static_cast<uint32_t>(data_len));
  return std::string(buf.data(), buf.size());
}

std::string encode(const Message& m) {
  msgpack::sbuffer buf;
  Packer p(&buf);
  p.pack_map(2);
  kv(p, "t", static_cast<uint64_t>(type_of(m)));
  key(p, "b");
  pack_body(p, buf, m);
  return std::string(buf.data(), buf.size());
}

namespace {
// Unpacks `bytes`, checks the envelope and hands its type and body to `f`; every failure becomes
// an Error. bin values (chunk data, up to 1 MiB) are referenced in `bytes` instead of copied into
// the zone: `f` copies what it keeps, or (decode_chunk) keeps views into `bytes`.
template <class R, class F>
Expected<R> decode_envelope(std::string_view bytes, const DecodeLimits& limits, F f) {
  try {
    msgpack::unpack_limit lim(limits.max_array, limits.max_map, limits.max_str, limits.max_bin, limits.max_ext,
                              limits.max_depth);
    std::size_t off = 0;
    auto ref_bin = [](msgpack::type::object_type type, std::size_t, void*) { return type == msgpack::type::BIN; };
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size(), off, ref_bin, nullptr, lim);
    if (off != bytes.size()) return make_error("decode", "trailing bytes after message");
    Fields env(oh.get(), "envelope");
    uint64_t t = env.u("t", true, UINT16_MAX);
    if (t < 1 || t > static_cast<uint64_t>(MsgType::kOpReply)) {
      return make_error("unknown_type", "unknown message type " + std::to_string(t));
    }
    if (env.find("b") == nullptr) return make_error("invalid", "envelope: missing field b");
    return f(static_cast<MsgType>(t), env.need("b"));
  } catch (const Invalid& e) {
    return make_error(e.code, e.what());
  } catch (const msgpack::depth_size_overflow& e) {
    return make_error("limit", std::string("msgpack nesting too deep: ") + e.what());
  } catch (const msgpack::size_overflow& e) {
    return make_error("limit", std::string("msgpack limit exceeded: ") + e.what());
  } catch (const std::bad_alloc&) {
    return make_error("limit", "message too large to decode");
  } catch (const std::exception& e) {
    return make_error("decode", std::string("malformed msgpack: ") + e.what());
  }
}
}  // namespace

Expected<Message> decode(std::string_view bytes, const DecodeLimits& limits) {
  return decode_envelope<Message>(
      bytes, limits, [](MsgType t, const msgpack::object& body) -> Expected<Message> { return body_of(t, body); });
}

Expected<ChunkView> decode_chunk(std::string_view bytes, const DecodeLimits& limits) {
  return decode_envelope<ChunkView>(bytes, limits, [](MsgType t, const msgpack::object& body) -> Expected<ChunkView> {
    if (t != MsgType::kChunk) return make_error("not_chunk", std::string("not a chunk: ") + type_name(t));
    return chunk_of(body);
  });
}

}  // namespace gantry::proto
