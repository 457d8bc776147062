// Issue 20, findings 1 and 2, against the real daemons: text that is not UTF-8 (with control
// characters) from every outside source an attacker found. The coordinator: an enrolled agent
// key's hello and report, a deployer's rollout reason. The agent (root): a probed service's HTTP
// status line, a signed archive's refused entry name. Each daemon keeps serving, shows the text
// escaped, and the agent ends its order cleanly on the previous release, without a restart.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/fleet.h"
#include "tests/support/peer.h"

namespace gantry::testing {
namespace {

using nlohmann::json;

const char* kPython = "/usr/bin/python3";

json cli_json(Fleet& f, const std::vector<std::string>& args) {
  std::vector<std::string> a = {"--json"};
  a.insert(a.end(), args.begin(), args.end());
  auto r = f.cli(a);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  try {
    return json::parse(r.out);
  } catch (const std::exception&) {
    return json::object();
  }
}

std::string pub_of(const std::string& prefix) {
  std::string k = read_file(prefix + ".pub");
  while (!k.empty() && k.back() == '\n') k.pop_back();
  return k;
}

int http_port(Fleet& f) {
  const std::string& a = f.endpoints().http;
  return std::stoi(a.substr(a.rfind(':') + 1));
}

// Text from outside is shown escaped: no byte that is not UTF-8 and no control character but
// newline (between lines) reaches the output.
bool has_raw_bytes(const std::string& s) {
  return std::any_of(s.begin(), s.end(),
                     [](unsigned char c) { return c == 0xff || c == 0xfe || c == 0x1b || c == 0x07; });
}

// /status parses as JSON and has `needle` in it; /metrics answers. Bounded wait: /status is a
// snapshot republished after changes.
void expect_views_serve(Fleet& f, const std::string& needle, const std::string& when) {
  std::string body;
  bool parsed = false;
  const bool found = wait_until(
      [&] {
        auto st = http_get(http_port(f), "/status", 5000);
        if (!st || st->status != 200) return false;
        body = st->body;
        try {
          (void)json::parse(body);
          parsed = true;
        } catch (const std::exception&) {
          parsed = false;
          return false;
        }
        return body.find(needle) != std::string::npos;
      },
      30000);
  EXPECT_TRUE(parsed) << when << ": /status is not JSON: " << body.substr(0, 2000);
  EXPECT_TRUE(found) << when << ": /status lacks " << needle << ": " << body.substr(0, 4000);
  EXPECT_FALSE(has_raw_bytes(body)) << when;
  auto m = http_get(http_port(f), "/metrics", 5000);
  ASSERT_TRUE(m.has_value()) << when;
  EXPECT_EQ(m->status, 200) << when;
  EXPECT_NE(m->body.find("gantry_"), std::string::npos) << when;
  EXPECT_FALSE(has_raw_bytes(m->body)) << when;
}

// Finding 1: an enrolled agent key's hello (agent_version) and report (message), and a deployer's
// rollout reason, all carrying bytes that are not UTF-8, an OSC 52 write and a newline. The
// coordinator used to abort on the next /status or /metrics (and, with the reason stored, again
// after every restart).
TEST(UntrustedText, TextThatIsNotUtf8NeverStopsTheCoordinator) {
  if (!have_python_zmq()) GTEST_SKIP() << "python3-zmq is not installed (scripts/install-deps)";
  Fleet f(1);
  f.start_coordinator();
  f.start_all_agents();
  const auto& ep = f.endpoints();
  const std::string server_pub = f.keys_dir() + "/coordinator.pub";
  const std::string rogue = f.dir() + "/rogue";
  ASSERT_EQ(run({bin_dir() + "/agent/gantry-agent", "keygen", "--out", rogue}, 30000).exit_code, 0);
  ASSERT_EQ(f.cli({"keys", "accept", pub_of(rogue), "--host", "rogue-1"}).exit_code, 0);
  auto v1 = f.make_release("v1", "healthy");
  ASSERT_EQ(f.cli({"release", "upload", v1, "--service", "demo", "--version", "v1"}).exit_code, 0);

  const json args = {
      {"service", "demo"}, {"version", "v1"}, {"selector", "role=rogue"}, {"plan", {{"batches", {"100%"}}}}};
  auto got = run_peer({"bad-text", "--endpoint", ep.agent, "--server-key", server_pub, "--key", rogue + ".key",
                       "--host", "rogue-1", "--op-endpoint", ep.operator_, "--op-key", f.keys_dir() + "/admin.key",
                       "--args", args.dump(), "--wait-ms", "3000"});
  EXPECT_EQ(got["welcome"], true) << got.dump();
  ASSERT_TRUE(got["start"].is_object()) << got.dump();
  EXPECT_EQ(got["start"]["ok"], true) << got.dump();
  EXPECT_GE(got.value("orders", 0), 1) << got.dump() << f.coordinator_log();
  EXPECT_TRUE(f.coordinator_running()) << f.coordinator_log();

  const auto check = [&](const std::string& when) {
    // The reason and the report's message, escaped, in the rollout on /status.
    expect_views_serve(f, "why\\\\xff\\\\xfe", when);
    expect_views_serve(f, "bad\\\\xff\\\\xfe", when);
    const json show = cli_json(f, {"rollout", "show", "1"});
    const std::string reason = show.value("reason", "");
    EXPECT_EQ(reason.rfind("why\\xff\\xfe\\xc3(\\x1b]52;c;b3duZWQ=\\x07\\x0a2026-01-01 forged", 0), 0u)
        << when << ": " << show.dump();
    std::string message;
    for (const auto& h : show["hosts"])
      if (h.value("host_id", "") == "rogue-1") message = h.value("message", "");
    EXPECT_NE(message.find("bad\\xff\\xfe"), std::string::npos) << when << ": " << show.dump();
    auto history = f.cli({"history"});
    EXPECT_EQ(history.exit_code, 0) << when << ": " << history.err;
    EXPECT_FALSE(has_raw_bytes(history.out)) << when;
    EXPECT_NE(history.out.find("why\\xff"), std::string::npos) << when << ": " << history.out;
  };
  // The agent_version, escaped, in the host list (hosts are restored without it after a restart).
  expect_views_serve(f, "hostile\\\\xff\\\\xfe", "while running");
  check("while running");
  // The same store after a restart: the stored reason and message are still served.
  f.restart_coordinator();
  check("after a restart");
  EXPECT_TRUE(f.coordinator_running());
  const std::string log = f.coordinator_log();
  EXPECT_FALSE(has_raw_bytes(log));
  EXPECT_EQ(log.find("event loop turn failed"), std::string::npos) << log;
}

// A release whose "service" answers every HTTP request with `reply` (a Python bytes literal). It
// runs as argv[0] gantry-demo-service, so demo/stop-service knows it.
std::string rogue_service_release(Fleet& f, const std::string& version, const std::string& reply_py) {
  const std::string tar = f.dir() + "/releases/" + version + ".tar";
  const std::string py = R"PY(
import io, sys, tarfile
out, version, reply = sys.argv[1], sys.argv[2], sys.argv[3]
script = """#!/bin/bash
exec -a gantry-demo-service /usr/bin/python3 -c '
import socket, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(2)
        c.recv(4096)
        c.sendall(%s)
    except OSError:
        pass
    c.close()
' "$@"
""" % reply
with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as t:
    for name, data, mode in (("bin/gantry-demo-service", script.encode(), 0o755),
                             ("release.conf", ("version=%s\nbehaviour=healthy\n" % version).encode(), 0o644)):
        i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode
        t.addfile(i, io.BytesIO(data))
)PY";
  EXPECT_EQ(run({kPython, "-c", py, tar, version, reply_py}, 30000).exit_code, 0);
  return tar;
}

void sign(const std::string& file, const std::string& version, const std::string& key) {
  auto r =
      run({bin_dir() + "/cli/gantry", "release", "sign", "--key", key, file, "--service", "demo", "--version", version},
          30000);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// The one host's record of the last rollout of demo: its outcome message.
std::string failed_rollout(Fleet& f, const std::string& file, const std::string& version) {
  auto r = f.cli({"rollout", "start", "--service", "demo", "--version", version, "--release", file, "--batches", "100%",
                  "--max-failures", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err << f.diagnostics();
  EXPECT_FALSE(has_raw_bytes(r.out + r.err));
  auto st = cli_json(f, {"status", "--service", "demo"});
  if (st["rollouts"].empty() || st["rollouts"][0]["hosts"].empty()) return "";
  return st["rollouts"][0]["hosts"][0].value("message", "");
}

// What the agent's state directory holds (its journal), all files concatenated.
std::string agent_state(Fleet& f) {
  std::string all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(f.agent_dir(0) + "/state"))
    if (e.is_regular_file()) all += read_file(e.path().string());
  return all;
}

// Finding 2: the agent crash-looped writing its journal, and never reverted, when a probed
// service answered with a status line that is not UTF-8 (no Gantry key needed), or when a signed
// archive had a refused entry whose name is not UTF-8. Now it writes its journal, reverts or
// fails the order, keeps running, and the host ends on its previous release.
TEST(UntrustedText, TextThatIsNotUtf8NeverStopsTheAgent) {
  Fleet f(1);
  f.start_coordinator();
  f.start_all_agents();
  auto v1 = f.make_release("v1", "healthy");
  auto ok = f.cli(
      {"rollout", "start", "--service", "demo", "--version", "v1", "--release", v1, "--batches", "100%", "--wait"});
  ASSERT_EQ(ok.exit_code, 0) << ok.out << ok.err << f.diagnostics();
  const pid_t agent_pid = f.agent_pid(0);
  const std::string release_key = f.keys_dir() + "/release.key";

  // A probed service whose status line is not UTF-8 and carries an OSC 52 write.
  auto probe = rogue_service_release(
      f, "v2", R"(b"HTTP/1.1 5\xff\xfe\x1b]52;c;b3duZWQ=\x07 Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")");
  sign(probe, "v2", release_key);
  const std::string probe_msg = failed_rollout(f, probe, "v2");
  EXPECT_NE(probe_msg.find("\\xff\\xfe"), std::string::npos) << probe_msg << f.agent_log(0);
  EXPECT_EQ(f.served_version(0), "v1") << f.diagnostics();

  // A signed archive with a refused entry (it climbs out of the root) whose name is not UTF-8.
  const std::string hostile = f.dir() + "/releases/v3.tar";
  const std::string py = R"PY(
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.USTAR_FORMAT) as t:
    for name, data in (("bin/gantry-demo-service", b"#!/bin/sh\nexit 0\n"),
                       ("\udcff\udcfe\x1b]52;c;b3duZWQ=\x07/../../../escaped-not-utf8", b"pwned")):
        i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o755
        t.addfile(i, io.BytesIO(data))
)PY";
  ASSERT_EQ(run({kPython, "-c", py, hostile}, 30000).exit_code, 0);
  sign(hostile, "v3", release_key);
  const std::string archive_msg = failed_rollout(f, hostile, "v3");
  EXPECT_NE(archive_msg.find("staging failed"), std::string::npos) << archive_msg << f.agent_log(0);
  EXPECT_NE(archive_msg.find("\\xff\\xfe"), std::string::npos) << archive_msg;
  EXPECT_FALSE(std::filesystem::exists(f.dir() + "/escaped-not-utf8"));
  EXPECT_FALSE(std::filesystem::exists(f.agent_dir(0) + "/escaped-not-utf8"));

  // The same agent process all along (no crash, no restart), its journal written with the text
  // escaped, its log free of raw bytes, and the host on v1.
  EXPECT_TRUE(f.agent_running(0));
  EXPECT_EQ(f.agent_pid(0), agent_pid) << f.agent_log(0);
  const std::string journal = agent_state(f);
  // (The journal is binary: records with their own lengths; the attacker's bytes must not be in it.)
  EXPECT_EQ(journal.find("\xff\xfe\x1b]52"), std::string::npos);
  EXPECT_NE(journal.find("\\\\xff\\\\xfe"), std::string::npos) << journal.substr(0, 4000);
  EXPECT_FALSE(has_raw_bytes(f.agent_log(0)));
  EXPECT_EQ(f.served_version(0), "v1") << f.diagnostics();
  // Finding 8: the failed releases left nothing in downloads/ (each order removed the others'
  // files; a failed one removed its checked artifact).
  std::vector<std::string> left;
  if (std::filesystem::exists(f.root(0) + "/downloads"))
    for (const auto& e : std::filesystem::directory_iterator(f.root(0) + "/downloads")) left.push_back(e.path());
  EXPECT_TRUE(left.empty()) << left.size() << " file(s) left, the first " << (left.empty() ? "" : left[0]);
  const json hosts = cli_json(f, {"hosts"});
  ASSERT_FALSE(hosts["hosts"].empty()) << hosts.dump();
  EXPECT_EQ(hosts["hosts"][0]["services"][0].value("current_version", ""), "v1") << hosts.dump();
}

}  // namespace
}  // namespace gantry::testing
