#include "fake_router.h"

#include <chrono>
#include <stdexcept>

#include "common/protocol/codec.h"
#include "common/transport/zmq_transport.h"

namespace gantry::testing {

FakeRouter::FakeRouter(Handler handler, const std::string& endpoint)
    : handler_(std::move(handler)), sock_(ctx_, zmq::socket_type::router) {
  transport::SocketOptions o;
  o.router_handover = true;  // an agent reconnecting under its host id takes its id over
  transport::configure(sock_, o);
  if (Status st = transport::bind(sock_, endpoint); !st.ok()) throw std::runtime_error(st.error().message);
  endpoint_ = sock_.get(zmq::sockopt::last_endpoint);
  thread_ = std::thread([this] { run(); });
}

FakeRouter::~FakeRouter() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void FakeRouter::send(const std::string& identity, const proto::Message& m) {
  std::lock_guard<std::mutex> g(mu_);
  outbox_.emplace_back(identity, m);
}

std::vector<FakeRouter::Received> FakeRouter::received() const {
  std::lock_guard<std::mutex> g(mu_);
  return received_;
}

void FakeRouter::run() {
  // Bounded by the test's lifetime: every turn waits at most 20 ms, and the destructor stops it.
  while (!stop_) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(20));
    std::vector<std::pair<std::string, proto::Message>> out;
    for (int i = 0; i < 100 && (item.revents & ZMQ_POLLIN); ++i) {
      auto in = transport::recv_routed(sock_);
      if (!in) break;
      auto msg = proto::decode(in->payload);
      if (!msg) continue;
      {
        std::lock_guard<std::mutex> g(mu_);
        received_.push_back({in->identity, *msg});
      }
      for (auto& m : handler_(in->identity, *msg)) out.emplace_back(in->identity, std::move(m));
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& o : outbox_) out.push_back(std::move(o));
      outbox_.clear();
    }
    for (const auto& [id, m] : out) (void)transport::send_to(sock_, id, m);
  }
}

}  // namespace gantry::testing
