// The HAProxy runtime API client against hostile answers: its CSV parser on its own, and the
// client over a real unix socket served by a scripted peer (HAProxy itself: tests/integration/traffic_test.cc).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "agent/traffic/haproxy_runtime.h"
#include "agent_test_util.h"

using namespace gantry;
using namespace gantry::agent::traffic;

namespace {

const std::string kHeader =
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n";

TEST(ShowStat, FindsTheServerRowByTheHeadersColumnNames) {
  std::string csv =
      kHeader + "be,web1,0,0,3,9,,100,0,0,,0,,0,0,0,0,DRAIN,0\n" + "be,web2,1,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1\n\n";
  auto a = parse_show_stat(csv, "be", "web1");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, "DRAIN");
  EXPECT_EQ(a->sessions, 3u);
  EXPECT_FALSE(a->up());
  auto b = parse_show_stat(csv, "be", "web2");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->queued, 1u);
  EXPECT_TRUE(b->up());
  // Columns moved: found by name.
  std::string moved = "# svname,status,pxname,scur,qcur\nweb1,UP 1/2,be,,\n";
  auto c = parse_show_stat(moved, "be", "web1");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->up());
  EXPECT_EQ(c->sessions, 0u);
}

TEST(ShowStat, RefusesWhatIsNotAShowStatAnswer) {
  EXPECT_EQ(parse_show_stat("", "be", "web1").error().code, "haproxy");
  EXPECT_EQ(parse_show_stat("Unknown command.\n", "be", "web1").error().code, "haproxy");
  EXPECT_EQ(parse_show_stat(std::string("\x00\x01\xff", 3), "be", "web1").error().code, "haproxy");
  EXPECT_EQ(parse_show_stat("# a,b,c\nbe,web1,1\n", "be", "web1").error().code, "haproxy");  // columns missing
  EXPECT_EQ(parse_show_stat(kHeader, "be", "web1").error().code, "not_found");
  // A short row is skipped, not indexed past its end.
  EXPECT_EQ(parse_show_stat(kHeader + "be,web1,0\n", "be", "web1").error().code, "not_found");
  // Counts that are not plain decimals.
  EXPECT_EQ(parse_show_stat(kHeader + "be,web1,0,0,-3,9,,100,0,0,,0,,0,0,0,0,UP,0\n", "be", "web1").error().code,
            "haproxy");
  EXPECT_EQ(parse_show_stat(kHeader + "be,web1,0,0,99999999999999999999999,9,,1,0,0,,0,,0,0,0,0,UP,0\n", "be", "web1")
                .error()
                .code,
            "haproxy");
  // A status with control characters.
  EXPECT_EQ(parse_show_stat(kHeader + "be,web1,0,0,0,9,,100,0,0,,0,,0,0,0,0,U\x1bP,0\n", "be", "web1").error().code,
            "haproxy");
}

TEST(ShowStat, SurvivesAHugeHeader) {
  std::string header = "# pxname,svname,qcur,scur,status";
  for (int i = 0; i < 5000; ++i) header += ",x";
  auto r = parse_show_stat(header + "\nbe,web1,0,0,UP\n", "be", "web1");
  EXPECT_FALSE(r.ok());  // more columns than accepted: the rows never match the header
}

TEST(HaproxyEndpoint, ParsesUnixPathsAndNumericIpv4Only) {
  auto u = parse_haproxy_endpoint("unix@/run/haproxy/admin.sock");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->unix_path, "/run/haproxy/admin.sock");
  auto t = parse_haproxy_endpoint("ipv4@127.0.0.1:9999");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->host, "127.0.0.1");
  EXPECT_EQ(t->port, 9999);
  EXPECT_FALSE(parse_haproxy_endpoint("localhost:9999").ok());
  EXPECT_FALSE(parse_haproxy_endpoint("127.0.0.1:0").ok());
  EXPECT_FALSE(parse_haproxy_endpoint("127.0.0.1:65536").ok());
  EXPECT_FALSE(parse_haproxy_endpoint("relative.sock").ok());
  EXPECT_FALSE(parse_haproxy_endpoint("/" + std::string(200, 'a')).ok());
}

TEST(HaproxyNames, OnlyPlainNames) {
  EXPECT_TRUE(is_haproxy_name("be_web-1.a:b"));
  EXPECT_FALSE(is_haproxy_name(""));
  EXPECT_FALSE(is_haproxy_name("web1 state maint"));
  EXPECT_FALSE(is_haproxy_name("web1\nshutdown"));
  EXPECT_FALSE(is_haproxy_name("web1;show"));
  EXPECT_FALSE(is_haproxy_name(std::string(65, 'a')));
}

// A unix socket peer answering each connection with `answer(command)`, then closing.
class ScriptedPeer {
 public:
  std::function<std::string(const std::string&)> answer;
  std::vector<std::string> commands;
  bool hang = false;  // read the command and never answer nor close (until stopped)

  explicit ScriptedPeer(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    thread_ = std::thread([this] { loop(); });
  }
  ~ScriptedPeer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }

 private:
  void loop() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string cmd;
      char b;
      while (::read(c, &b, 1) == 1 && b != '\n') cmd += b;
      commands.push_back(cmd);
      if (hang) {
        while (!stop_) ::usleep(10000);
      } else {
        std::string out = answer ? answer(cmd) : "";
        size_t off = 0;
        while (off < out.size()) {
          ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
          if (n <= 0) break;
          off += static_cast<size_t>(n);
        }
      }
      ::close(c);
    }
  }
  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class RuntimeTest : public ::testing::Test {
 protected:
  gantry::agent::testing::TempDir t;
  std::string sock = t / "admin.sock";
  HaproxyRuntime rt{HaproxyEndpoint{sock, "", 0}, "be", "web1", 300};
};

TEST_F(RuntimeTest, SendsOneCommandPerConnectionAndReadsTheAnswer) {
  ScriptedPeer peer(sock);
  peer.answer = [](const std::string& cmd) -> std::string {
    if (cmd.rfind("set server", 0) == 0) return "\n";
    return kHeader + "be,web1,0,0,0,9,,100,0,0,,0,,0,0,0,0,UP,1\n\n";
  };
  ASSERT_TRUE(rt.drain().ok());
  ASSERT_TRUE(rt.ready().ok());
  auto st = rt.stat();
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(st->up());
  EXPECT_EQ(peer.commands, (std::vector<std::string>{"set server be/web1 state drain", "set server be/web1 state ready",
                                                     "show stat be 4 -1"}));
}

TEST_F(RuntimeTest, HaproxysErrorTextIsAnError) {
  ScriptedPeer peer(sock);
  peer.answer = [](const std::string&) { return std::string("No such server.\n\n"); };
  Status st = rt.drain();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("No such server."), std::string::npos);
}

TEST_F(RuntimeTest, AnOversizedAnswerIsRefused) {
  ScriptedPeer peer(sock);
  peer.answer = [](const std::string&) { return std::string(HaproxyRuntime::kMaxAnswerBytes + 10, 'x'); };
  auto st = rt.stat();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "limit");
}

TEST_F(RuntimeTest, APeerThatNeverAnswersTimesOut) {
  ScriptedPeer peer(sock);
  peer.hang = true;
  auto st = rt.stat();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "timeout");
}

TEST_F(RuntimeTest, NoSocketIsAnIoError) {
  auto st = rt.stat();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "io");
}

}  // namespace
