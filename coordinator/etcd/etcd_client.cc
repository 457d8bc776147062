// The etcd v3 client over gRPC (etcd_client.h). One channel per endpoint, created on first use;
// calls go to the current endpoint and move to the next one when it is unavailable (down, or
// without a leader) or did not answer a try in time (half the call's deadline, at least 1 s: a
// member cut off from its quorum, or a write forwarded to a leader that died), round after
// round with a 50 ms pause, until the call's deadline. So a call may reach etcd more than once:
// etcd_client.h says what that means for a transaction. The lease keepalive is one write and one
// read on a LeaseKeepAlive stream kept open (asynchronous API, so the read has a deadline), opened again after any
// error.
#include "coordinator/etcd/etcd_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace gantry::etcd {

namespace pb = etcdserverpb;

namespace {

// etcd's answers can be large (a 10,000-host rollout's slots in one range): no gRPC size cap
// on receiving; what etcd accepts is bounded by its own --max-request-bytes.
constexpr int kMaxMessageBytes = 512 * 1024 * 1024;

Expected<std::string> read_pem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("etcd", std::string("cannot read the etcd ") + what + " " + path);
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().empty()) return make_error("etcd", std::string("the etcd ") + what + " " + path + " is empty");
  return s.str();
}

// A failed call's Error, naming the call and, for a request over etcd's limits, the flags
// that set them.
Error call_error(const char* call, const std::string& endpoint, const grpc::Status& st) {
  const std::string& m = st.error_message();
  std::string msg = "etcd " + std::string(call) + " at " + endpoint + ": " + m + " (gRPC code " +
                    std::to_string(static_cast<int>(st.error_code())) + ")";
  if (m.find("too many operations in txn request") != std::string::npos) {
    msg += "; the transaction has more operations than etcd's --max-txn-ops allows (raise it on every member)";
  } else if (m.find("request is too large") != std::string::npos || m.find("larger than max") != std::string::npos) {
    msg += "; the request is larger than etcd's --max-request-bytes allows (raise it on every member)";
  }
  return make_error("etcd", msg);
}

pb::Compare::CompareTarget to_pb(Compare::Target t) {
  switch (t) {
    case Compare::Target::kVersion:
      return pb::Compare::VERSION;
    case Compare::Target::kCreate:
      return pb::Compare::CREATE;
    case Compare::Target::kMod:
      return pb::Compare::MOD;
    case Compare::Target::kValue:
      return pb::Compare::VALUE;
    case Compare::Target::kLease:
      return pb::Compare::LEASE;
  }
  return pb::Compare::CREATE;
}

pb::Compare::CompareResult to_pb(Compare::Result r) {
  switch (r) {
    case Compare::Result::kEqual:
      return pb::Compare::EQUAL;
    case Compare::Result::kGreater:
      return pb::Compare::GREATER;
    case Compare::Result::kLess:
      return pb::Compare::LESS;
    case Compare::Result::kNotEqual:
      return pb::Compare::NOT_EQUAL;
  }
  return pb::Compare::EQUAL;
}

void fill(pb::RequestOp* out, const Op& op) {
  switch (op.kind) {
    case Op::Kind::kPut: {
      auto* p = out->mutable_request_put();
      p->set_key(op.key);
      p->set_value(op.value);
      p->set_lease(op.lease);
      break;
    }
    case Op::Kind::kDelete: {
      auto* d = out->mutable_request_delete_range();
      d->set_key(op.key);
      d->set_range_end(op.range_end);
      break;
    }
    case Op::Kind::kGet: {
      auto* g = out->mutable_request_range();
      g->set_key(op.key);
      g->set_range_end(op.range_end);
      g->set_limit(op.limit);
      break;
    }
  }
}

KeyValue from_pb(const mvccpb::KeyValue& kv) {
  return KeyValue{kv.key(), kv.value(), kv.create_revision(), kv.mod_revision(), kv.version(), kv.lease()};
}

// etcd's "require leader" metadata (rpctypes.MetadataRequireLeaderKey): a member without a
// leader refuses the call at once (UNAVAILABLE, "no leader"; a stream is cancelled when its
// member loses the leader) instead of holding it until the deadline, so that the call is tried
// again at another member, or again once the election is over, within its deadline.
void require_leader(grpc::ClientContext& ctx) { ctx.AddMetadata("hasleader", "true"); }

class GrpcClient final : public Client {
 public:
  GrpcClient(ClientConfig cfg, std::shared_ptr<grpc::ChannelCredentials> creds)
      : cfg_(std::move(cfg)), creds_(std::move(creds)), eps_(cfg_.endpoints.size()) {}

  ~GrpcClient() override {
    std::lock_guard<std::mutex> lk(ka_mu_);
    close_stream();
  }

  Expected<RangeResult> range(const std::string& key, const std::string& range_end, int64_t limit, bool keys_only,
                              bool serializable, bool descending) override {
    pb::RangeRequest req;
    req.set_key(key);
    req.set_range_end(range_end);
    req.set_limit(limit);
    req.set_keys_only(keys_only);
    req.set_serializable(serializable);
    if (descending) {
      req.set_sort_order(pb::RangeRequest::DESCEND);
      req.set_sort_target(pb::RangeRequest::KEY);
    }
    pb::RangeResponse resp;
    auto st = call("Range", [&](Endpoint& e, grpc::ClientContext* ctx) { return e.kv->Range(ctx, req, &resp); });
    if (!st.ok()) return st.error();
    RangeResult out;
    out.kvs.reserve(static_cast<size_t>(resp.kvs_size()));
    for (const auto& kv : resp.kvs()) out.kvs.push_back(from_pb(kv));
    out.more = resp.more();
    out.revision = resp.header().revision();
    return out;
  }

  Expected<TxnResult> txn(const std::vector<Compare>& compares, const std::vector<Op>& success,
                          const std::vector<Op>& failure) override {
    pb::TxnRequest req;
    for (const auto& c : compares) {
      auto* pc = req.add_compare();
      pc->set_key(c.key);
      pc->set_target(to_pb(c.target));
      pc->set_result(to_pb(c.result));
      switch (c.target) {
        case Compare::Target::kVersion:
          pc->set_version(c.number);
          break;
        case Compare::Target::kCreate:
          pc->set_create_revision(c.number);
          break;
        case Compare::Target::kMod:
          pc->set_mod_revision(c.number);
          break;
        case Compare::Target::kValue:
          pc->set_value(c.value);
          break;
        case Compare::Target::kLease:
          pc->set_lease(c.number);
          break;
      }
    }
    for (const auto& op : success) fill(req.add_success(), op);
    for (const auto& op : failure) fill(req.add_failure(), op);
    pb::TxnResponse resp;
    auto st = call("Txn", [&](Endpoint& e, grpc::ClientContext* ctx) { return e.kv->Txn(ctx, req, &resp); });
    if (!st.ok()) return st.error();
    TxnResult out;
    out.succeeded = resp.succeeded();
    out.revision = resp.header().revision();
    out.gets.reserve(static_cast<size_t>(resp.responses_size()));
    for (const auto& r : resp.responses()) {
      std::vector<KeyValue> kvs;
      if (r.has_response_range()) {
        for (const auto& kv : r.response_range().kvs()) kvs.push_back(from_pb(kv));
      }
      out.gets.push_back(std::move(kvs));
    }
    return out;
  }

  Expected<int64_t> lease_grant(int64_t ttl_s) override {
    pb::LeaseGrantRequest req;
    req.set_ttl(ttl_s);
    pb::LeaseGrantResponse resp;
    auto st =
        call("LeaseGrant", [&](Endpoint& e, grpc::ClientContext* ctx) { return e.lease->LeaseGrant(ctx, req, &resp); });
    if (!st.ok()) return st.error();
    if (!resp.error().empty()) return make_error("etcd", "LeaseGrant: " + resp.error());
    if (resp.id() == 0) return make_error("etcd", "LeaseGrant: etcd answered lease ID 0");
    return resp.id();
  }

  Expected<int64_t> lease_keepalive(int64_t lease_id) override {
    std::lock_guard<std::mutex> lk(ka_mu_);
    if (!stream_ && !open_stream()) {
      return make_error("etcd", "LeaseKeepAlive: cannot open the stream at " + cfg_.endpoints[ka_endpoint_]);
    }
    pb::LeaseKeepAliveRequest req;
    req.set_id(lease_id);
    const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(cfg_.call_timeout_ms);
    stream_->Write(req, tag(kWrite));
    if (!await(kWrite, deadline)) return stream_failed("write");
    pb::LeaseKeepAliveResponse resp;
    stream_->Read(&resp, tag(kRead));
    if (!await(kRead, deadline)) return stream_failed("read");
    if (resp.id() != lease_id) {
      close_stream();
      return make_error("etcd", "LeaseKeepAlive: answer for lease " + std::to_string(resp.id()) + ", not " +
                                    std::to_string(lease_id));
    }
    return resp.ttl();
  }

  Status lease_revoke(int64_t lease_id) override {
    pb::LeaseRevokeRequest req;
    req.set_id(lease_id);
    pb::LeaseRevokeResponse resp;
    auto st = call("LeaseRevoke",
                   [&](Endpoint& e, grpc::ClientContext* ctx) { return e.lease->LeaseRevoke(ctx, req, &resp); });
    return st;
  }

  Status compact(int64_t revision) override {
    pb::CompactionRequest req;
    req.set_revision(revision);
    req.set_physical(true);
    pb::CompactionResponse resp;
    return call("Compact", [&](Endpoint& e, grpc::ClientContext* ctx) { return e.kv->Compact(ctx, req, &resp); });
  }

 private:
  // Shared so that a call keeps what it uses while another thread replaces a failing channel.
  struct Endpoint {
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<pb::KV::Stub> kv;
    std::shared_ptr<pb::Lease::Stub> lease;
    int failures = 0;  // tries in a row that were not answered (UNAVAILABLE, deadline)
  };
  // A channel whose connection attempts were blackholed (packets dropped, then the path back)
  // was seen to stay stuck in its handshake for over a minute after the path returned: after
  // this many unanswered tries in a row the endpoint gets a new channel (own subchannel pool).
  static constexpr int kFailuresBeforeNewChannel = 3;

  Endpoint& endpoint(size_t i) {  // under mu_
    auto& e = eps_[i];
    if (!e.channel) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(kMaxMessageBytes);
      args.SetMaxSendMessageSize(kMaxMessageBytes);
      // Reconnect quickly after an etcd member comes back (default backoff grows to 120 s).
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      e.channel = grpc::CreateCustomChannel(cfg_.endpoints[i], creds_, args);
      e.kv = pb::KV::NewStub(e.channel);
      e.lease = pb::Lease::NewStub(e.channel);
    }
    return e;
  }

  // Runs `f` against the current endpoint, moving on as the file's comment says.
  template <typename F>
  Status call(const char* name, F&& f) {
    const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(cfg_.call_timeout_ms);
    // One try may take half the call's time (at least a second): a write a member forwarded to
    // a leader that just died is never answered, and is sent again once that time is up.
    const auto per_try = std::chrono::milliseconds(std::max(cfg_.call_timeout_ms / 2, 1000));
    size_t i = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      i = current_;
    }
    grpc::Status last;
    std::string last_ep;
    // Bounded by the deadline and by a count: each endpoint is tried in turn while it answers
    // UNAVAILABLE (a member down, or one without a leader for the moment), with a short pause
    // after each round of them all.
    for (size_t attempt = 0; attempt < 64 * eps_.size(); ++attempt) {
      if (attempt > 0 && attempt % eps_.size() == 0) {
        const auto pause = std::chrono::system_clock::now() + std::chrono::milliseconds(50);
        if (pause >= deadline) break;
        std::this_thread::sleep_until(pause);
      }
      Endpoint e;
      {
        std::lock_guard<std::mutex> lk(mu_);
        e = endpoint(i);  // a copy: its stubs stay alive for this try
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::min(deadline, std::chrono::system_clock::now() + per_try));
      require_leader(ctx);
      last = f(e, &ctx);
      last_ep = cfg_.endpoints[i];
      if (last.ok()) {
        std::lock_guard<std::mutex> lk(mu_);
        current_ = i;
        eps_[i].failures = 0;
        return Status::Ok();
      }
      const auto code = last.error_code();
      if (code != grpc::StatusCode::UNAVAILABLE && code != grpc::StatusCode::DEADLINE_EXCEEDED) break;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (eps_[i].channel == e.channel && ++eps_[i].failures >= kFailuresBeforeNewChannel)
          eps_[i] = Endpoint{};  // created again at its next use
      }
      i = (i + 1) % eps_.size();
      {
        std::lock_guard<std::mutex> lk(mu_);
        current_ = i;
      }
      if (std::chrono::system_clock::now() >= deadline) break;
    }
    return call_error(name, last_ep, last);
  }

  // The keepalive stream (under ka_mu_).
  enum Tag : intptr_t { kStart = 1, kWrite, kRead, kFinish };
  static void* tag(Tag t) { return reinterpret_cast<void*>(static_cast<intptr_t>(t)); }

  bool await(Tag want, std::chrono::system_clock::time_point deadline) {
    void* got = nullptr;
    bool ok = false;
    switch (cq_->AsyncNext(&got, &ok, deadline)) {
      case grpc::CompletionQueue::GOT_EVENT:
        return got == tag(want) && ok;
      case grpc::CompletionQueue::TIMEOUT:
        pending_ = true;
        return false;
      case grpc::CompletionQueue::SHUTDOWN:
        return false;
    }
    return false;
  }

  bool open_stream() {
    size_t i = 0;
    std::shared_ptr<pb::Lease::Stub> lease;
    std::shared_ptr<grpc::Channel> channel;
    {
      std::lock_guard<std::mutex> lk(mu_);
      i = current_;
      ka_endpoint_ = i;
      lease = endpoint(i).lease;
      channel = eps_[i].channel;
    }
    cq_ = std::make_unique<grpc::CompletionQueue>();
    ctx_ = std::make_unique<grpc::ClientContext>();
    require_leader(*ctx_);
    pending_ = false;
    stream_ = lease->AsyncLeaseKeepAlive(ctx_.get(), cq_.get(), tag(kStart));
    const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(cfg_.call_timeout_ms);
    if (!await(kStart, deadline)) {
      close_stream();
      std::lock_guard<std::mutex> lk(mu_);
      if (eps_[i].channel == channel && ++eps_[i].failures >= kFailuresBeforeNewChannel) eps_[i] = Endpoint{};
      current_ = (i + 1) % eps_.size();
      return false;
    }
    return true;
  }

  Error stream_failed(const char* what) {
    const std::string ep = cfg_.endpoints[ka_endpoint_];
    close_stream();
    {
      std::lock_guard<std::mutex> lk(mu_);
      current_ = (ka_endpoint_ + 1) % eps_.size();
    }
    return make_error("etcd", std::string("etcd LeaseKeepAlive at ") + ep + ": the stream's " + what +
                                  " failed or timed out (the stream is opened again at the next call)");
  }

  // Cancels the stream and waits for every operation on it to complete before freeing it.
  void close_stream() {
    if (!stream_) return;
    ctx_->TryCancel();
    grpc::Status st;
    stream_->Finish(&st, tag(kFinish));
    cq_->Shutdown();
    void* got = nullptr;
    bool ok = false;
    while (cq_->Next(&got, &ok)) {}
    stream_.reset();
    ctx_.reset();
    cq_.reset();
    pending_ = false;
  }

  const ClientConfig cfg_;
  const std::shared_ptr<grpc::ChannelCredentials> creds_;
  std::mutex mu_;  // eps_ channels and current_
  std::vector<Endpoint> eps_;
  size_t current_ = 0;

  std::mutex ka_mu_;
  size_t ka_endpoint_ = 0;
  std::unique_ptr<grpc::CompletionQueue> cq_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>> stream_;
  bool pending_ = false;
};

}  // namespace

Expected<std::unique_ptr<Client>> Client::connect(const ClientConfig& cfg) {
  if (cfg.endpoints.empty()) return make_error("etcd", "no etcd endpoint given");
  if (cfg.call_timeout_ms <= 0) return make_error("etcd", "the etcd call timeout must be positive");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (cfg.ca_file.empty()) {
    if (!cfg.cert_file.empty() || !cfg.key_file.empty())
      return make_error("etcd", "an etcd client certificate needs the CA file too (--etcd-ca)");
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    auto ca = read_pem(cfg.ca_file, "CA file");
    if (!ca) return ca.error();
    o.pem_root_certs = std::move(*ca);
    if (cfg.cert_file.empty() != cfg.key_file.empty())
      return make_error("etcd", "an etcd client certificate needs both --etcd-cert and --etcd-key");
    if (!cfg.cert_file.empty()) {
      auto cert = read_pem(cfg.cert_file, "client certificate");
      if (!cert) return cert.error();
      auto key = read_pem(cfg.key_file, "client key");
      if (!key) return key.error();
      o.pem_cert_chain = std::move(*cert);
      o.pem_private_key = std::move(*key);
    }
    creds = grpc::SslCredentials(o);
  }
  return std::unique_ptr<Client>(new GrpcClient(cfg, std::move(creds)));
}

}  // namespace gantry::etcd
