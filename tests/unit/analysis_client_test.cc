// The analysis' outside edges: query templates filled in with hostile host names, and
// Prometheus' answers parsed as hostile input, over a real HTTP server on loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "coordinator/analysis/analysis_scheduler.h"
#include "coordinator/analysis/prometheus_client.h"
#include "coordinator/analysis/query_template.h"

using namespace gantry;
using namespace gantry::coordinator::analysis;

TEST(AnalysisTemplate, FillsInVariablesWithNamesQuotedOnce) {
  TemplateVars v;
  v.service = "web";
  v.new_version = "2.4.1";
  v.old_version = "2.4.0";
  v.batch_hosts = {"10.0.0.1:8080", "web-2"};
  v.new_hosts = {"a"};
  v.old_hosts = {"b", "c"};
  auto r = render("rate(x{instance=~\"{{batch_hosts}}\",svc=\"{{ service }}\",v=\"{{version}}\"}[1m])", v);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "rate(x{instance=~\"10\\\\.0\\\\.0\\\\.1:8080|web-2\",svc=\"web\",v=\"2.4.1\"}[1m])");
  EXPECT_EQ(*render("{{hosts}} {{version}}", v, Side::kBaseline), "b|c 2.4.0");
  EXPECT_EQ(*render("{{hosts}} {{version}}", v, Side::kCanary), "a 2.4.1");

  // A host label cannot close the string or add a matcher: quotes and backslashes escaped,
  // unprintable names left out.
  v.batch_hosts = {"x\",evil=\"1", "back\\slash", "bad\nname", ""};
  r = render("{instance=~\"{{batch_hosts}}\"}", v);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "{instance=~\"x\\\",evil=\\\"1|back\\\\\\\\slash\"}");
  EXPECT_FALSE(instance_ok("bad\nname"));
  EXPECT_FALSE(instance_ok(std::string(256, 'a')));

  // Unknown variables and unclosed braces are errors that name them.
  auto e = render("{{nope}}", v);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("{{nope}}"), std::string::npos);
  EXPECT_FALSE(render("x{{batch_hosts", v).ok());
  // Bounded.
  v.rollout_hosts.assign(20000, "host-with-a-long-name");
  EXPECT_FALSE(render("{{rollout_hosts}}", v).ok());
}

TEST(PrometheusAnswer, OneNumberOrAnErrorThatSaysWhy) {
  EXPECT_DOUBLE_EQ(
      *parse_query_response(
          200, R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}})"),
      0.25);
  EXPECT_DOUBLE_EQ(
      *parse_query_response(200, R"({"status":"success","data":{"resultType":"scalar","result":[1,"3"]}})"), 3.0);
  EXPECT_TRUE(std::isnan(*parse_query_response(
      200, R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}})")));
  EXPECT_TRUE(std::isinf(*parse_query_response(
      200, R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}})")));
  const auto err = [](int status, const std::string& body) {
    auto r = parse_query_response(status, body);
    return r.ok() ? std::string("value") : r.error().code + ": " + r.error().message;
  };
  EXPECT_NE(err(200, R"({"status":"success","data":{"resultType":"vector","result":[]}})").find("no data"),
            std::string::npos);
  EXPECT_NE(
      err(200, R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}})")
          .find("returns 2 series"),
      std::string::npos);
  EXPECT_EQ(err(400, R"({"status":"error","errorType":"bad_data","error":"parse error at char 5"})"),
            "promql: invalid PromQL: parse error at char 5");
  EXPECT_NE(err(503, R"({"status":"error","errorType":"unavailable","error":"x"})").find("prometheus: query error"),
            std::string::npos);
  EXPECT_NE(err(200, "<html>").find("not JSON"), std::string::npos);
  EXPECT_NE(err(200, R"({"status":"success","data":{"resultType":"matrix","result":[]}})").find("matrix"),
            std::string::npos);
  EXPECT_NE(err(200, R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,3]}]}})")
                .find("not a string"),
            std::string::npos);
  EXPECT_NE(err(200, R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,"12abc"]}]}})")
                .find("not a number"),
            std::string::npos);
  // Control characters in Prometheus' message are escaped where they enter.
  const std::string msg = err(400, "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"a\\u001b[31mb\"}");
  EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
}

TEST(PrometheusAnswer, ServerUrlsAreCheckedWhereTheyEnter) {
  auto u = parse_server_url("http://127.0.0.1:9090/prom/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->origin, "http://127.0.0.1:9090");
  EXPECT_EQ(u->prefix, "/prom");
  EXPECT_FALSE(parse_server_url("https://x:1").ok());
  EXPECT_FALSE(parse_server_url("http://x").ok());
  EXPECT_FALSE(parse_server_url("http://x:99999").ok());
  EXPECT_FALSE(parse_server_url("http://x y:1").ok());
  EXPECT_FALSE(parse_server_url("http://x:1/a?b").ok());
}

// A real HTTP server on loopback playing Prometheus, well and badly: plain sockets, one
// connection at a time, the query taken from the request line.
class FakePrometheusServer {
 public:
  FakePrometheusServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakePrometheusServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string last_query() {
    std::lock_guard<std::mutex> lk(mu_);
    return last_query_;
  }

 private:
  static std::string decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '+') {
        out += ' ';
      } else if (s[i] == '%' && i + 2 < s.size()) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos && req.size() < 1 << 20) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      const size_t q = req.find("query=");
      const size_t sp = req.find(' ', q == std::string::npos ? 0 : q);
      const std::string query = q == std::string::npos ? "" : decode(req.substr(q + 6, sp - q - 6));
      {
        std::lock_guard<std::mutex> lk(mu_);
        last_query_ = query;
      }
      int status = 200;
      std::string body =
          R"({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]}]}})";
      if (query == "big") {
        body = std::string(2 * 1024 * 1024, 'x');
      } else if (query == "bad") {
        status = 400;
        body = R"({"status":"error","errorType":"bad_data","error":"unexpected end of input"})";
      }
      const std::string head = "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\n" +
                               "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
      const std::string all = head + body;
      for (size_t off = 0; off < all.size();) {
        const ssize_t n = ::send(c, all.data() + off, all.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::close(c);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string last_query_;
  std::thread thread_;
};

TEST(PrometheusAnswer, TheHttpClientBoundsWhatItReads) {
  FakePrometheusServer prom;
  HttpPromQuerier q(2000);
  auto v = q.instant(prom.url(), "sum(rate(x{instance=~\"a|b\"}[1m]))");
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_DOUBLE_EQ(*v, 0.5);
  EXPECT_EQ(prom.last_query(), "sum(rate(x{instance=~\"a|b\"}[1m]))") << "the query arrives as written";
  auto big = q.instant(prom.url(), "big");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message.find("larger than 1 MiB"), std::string::npos) << big.error().message;
  auto bad = q.instant(prom.url(), "bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "promql");
  // Nothing listening: an error, not an exception.
  const std::string gone = prom.url();
  HttpPromQuerier q2(500);
  auto down = q2.instant("http://127.0.0.1:1", "up");
  ASSERT_FALSE(down.ok());
  EXPECT_NE(down.error().message.find("cannot reach Prometheus"), std::string::npos) << down.error().message;
}

TEST(PrometheusAnswer, TheRunnerMeasuresOnItsOwnThreadAndComparesBothSides) {
  FakePrometheusServer prom;
  HttpPromQuerier q(2000);
  ThreadedQueryRunner runner(q);
  QueryJob job;
  job.rollout_id = 4;
  job.server = prom.url();
  job.canary = "canary";
  job.baseline = "baseline";
  job.compare = true;
  runner.submit(job);
  std::vector<QueryJob> done;
  // Bounded wait for the worker thread (no timing threshold: only how long we are willing to wait).
  for (int i = 0; i < 500 && done.empty(); ++i) {
    done = runner.take_done();
    if (done.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].rollout_id, 4u);
  ASSERT_TRUE(done[0].m.value && done[0].m.baseline) << done[0].m.error;
  EXPECT_EQ(prom.last_query(), "baseline");
}
