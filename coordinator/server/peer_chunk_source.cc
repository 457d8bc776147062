#include "coordinator/server/peer_chunk_source.h"

#include <chrono>

#include "common/protocol/codec.h"
#include "common/util/text.h"

namespace gantry::coordinator {

namespace {
// How often a wait for a reply looks at `cancel`.
constexpr Millis kPollSliceMs = 100;
}  // namespace

ZmqChunkSource::ZmqChunkSource(const transport::CurveOptions& server_curve, Millis timeout_ms)
    : timeout_ms_(timeout_ms) {
  transport::configure_context(ctx_);
  if (server_curve.enabled()) {
    client_.server = false;
    client_.public_key = server_curve.public_key;
    client_.secret_key = server_curve.secret_key;
    client_.server_public_key = server_curve.public_key;
  }
}

ZmqChunkSource::~ZmqChunkSource() {
  sockets_.clear();  // before the context (linger 0)
}

Expected<zmq::socket_t*> ZmqChunkSource::socket_for(const std::string& endpoint) {
  auto it = sockets_.find(endpoint);
  if (it != sockets_.end()) return it->second.get();
  if (auto st = transport::check_connect_endpoint(endpoint); !st.ok())
    return make_error("endpoint", "peer endpoint " + safe_text(endpoint, 128) + ": " + st.error().message);
  if (sockets_.size() >= 64) sockets_.clear();  // bounded; at worst connections are made again
  try {
    auto s = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    transport::SocketOptions o;
    o.send_hwm = 16;
    o.recv_hwm = 16;
    // One reply carries up to 1 MiB of data; the decoder takes 2 MiB of bin at most.
    o.max_msg_size = 4 * 1024 * 1024;
    o.curve = client_;
    transport::configure(*s, o);
    if (auto st = transport::connect(*s, endpoint); !st.ok()) return st.error();
    zmq::socket_t* raw = s.get();
    sockets_[endpoint] = std::move(s);
    return raw;
  } catch (const zmq::error_t& e) {
    return make_error("endpoint", "cannot connect to peer " + safe_text(endpoint, 128) + ": " + e.what());
  }
}

Expected<ChunkSource::Piece> ZmqChunkSource::read(const std::string& endpoint, const std::string& sha256,
                                                  uint64_t offset, uint32_t length, const std::atomic<bool>& cancel) {
  auto sock = socket_for(endpoint);
  if (!sock) return sock.error();
  zmq::socket_t& s = **sock;
  const std::string id = "peer-" + std::to_string(next_id_++);
  proto::OpRequest req{id, "artifact-chunk", {{"sha256", sha256}, {"offset", offset}, {"length", length}}};
  if (auto st = transport::send(s, req); !st.ok()) {
    sockets_.erase(endpoint);
    return make_error("timeout", "cannot send to peer " + endpoint + ": " + st.error().message);
  }
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    if (cancel.load()) {
      sockets_.erase(endpoint);
      return make_error("cancelled", "the fetch was cancelled");
    }
    const Millis waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (waited >= timeout_ms_) {
      // A late reply must not be taken for the next request's: a new socket for the next one.
      sockets_.erase(endpoint);
      return make_error("timeout", "peer " + endpoint + " did not answer within " + std::to_string(timeout_ms_) +
                                       " ms (down, unreachable, or it refused this coordinator's key)");
    }
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(std::min(kPollSliceMs, timeout_ms_ - waited)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      sockets_.erase(endpoint);
      return make_error("timeout", std::string("poll failed: ") + e.what());
    }
    if (!(item.revents & ZMQ_POLLIN)) continue;
    // Everything waiting: replies to earlier requests (answered after their timeout on a socket
    // since replaced cannot arrive here) are skipped by request id.
    for (int i = 0; i < 64; ++i) {
      bool dropped = false;
      auto frame = transport::recv_frame(s, &dropped);
      if (dropped) continue;
      if (!frame) break;
      auto msg = proto::decode(*frame);
      if (!msg) return make_error("invalid", "peer " + endpoint + " sent an undecodable reply: " + msg.error().message);
      const auto* rep = std::get_if<proto::OpReply>(&*msg);
      if (!rep) {
        if (const auto* e = std::get_if<proto::ErrorMsg>(&*msg))
          return make_error("refused", "peer " + endpoint + " answered " + e->code + ": " + e->message);
        return make_error("invalid", "peer " + endpoint + " answered with a " + proto::type_name(proto::type_of(*msg)) +
                                         ", not an op_reply");
      }
      if (rep->request_id != id) continue;
      if (!rep->ok) {
        // The codec made the error text safe; "not_found: ..." is the peer lacking the artifact.
        const bool missing = rep->error.rfind("not_found", 0) == 0;
        return make_error(missing ? "not_found" : "refused",
                          "peer " + endpoint + " answered: " + safe_text(rep->error, 256));
      }
      const auto& r = rep->result;
      if (!r.is_object() || !r.contains("size") || !r["size"].is_number_unsigned() || !r.contains("data") ||
          !r["data"].is_binary() || !r.contains("offset") || !r["offset"].is_number_unsigned() ||
          r["offset"].get<uint64_t>() != offset)
        return make_error("invalid", "peer " + endpoint + " sent a reply without size, offset " +
                                         std::to_string(offset) + " and binary data");
      Piece p;
      p.size = r["size"].get<uint64_t>();
      const auto& bin = r["data"].get_binary();
      p.data.assign(bin.begin(), bin.end());
      return p;
    }
  }
}

}  // namespace gantry::coordinator
