#include "cli/app.h"

#include <sys/stat.h>
#include <unistd.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "cli/client.h"
#include "cli/plan_file.h"
#include "cli/table.h"
#include "common/release/manifest.h"
#include "common/security/keys.h"
#include "common/util/endpoint.h"
#include "common/util/fs.h"
#include "common/util/sha256.h"
#include "common/util/text.h"
#include "common/version.h"

namespace po = boost::program_options;

namespace gantry::cli {

namespace {

struct Globals {
  std::string coordinator;
  bool json = false;
  int timeout_ms = 10000;
  std::string key;              // operator CURVE secret key file
  std::string coordinator_key;  // coordinator CURVE public key file (pinned)
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kTopHelp = R"(gantry — roll services across a fleet, batch by batch, and roll back on failure.

Usage: gantry [global options] COMMAND [options]

Commands:
  hosts                         list hosts, their state, labels and releases
  status [--service S]          the current or last rollout of each service, and the fleet
  release upload FILE --service S --version V
                                upload a release artifact to the coordinator
  rollout plan  [plan options]  show the exact host-to-batch schedule, change nothing
  rollout start [plan options]  start a rollout (--wait to follow it to the end)
  rollout watch [ID]            follow a rollout live; exit 0 if it succeeds
  rollout show ID               one rollout, with its hosts and event log
  rollout pause|resume|promote|abort [ID] [--service S]
  rollback --service S [--to-revision N] [--dry-run] [--wait]
                                roll the service back (the active rollout's changed hosts,
                                or a new rollout to the previous revision)
  history [SERVICE]             every rollout and revision, who started it, how it ended
  audit                         the operator audit log
  keys list                     agent keys (pending/accepted/rejected/revoked) and operator keys
  keys accept HOST_OR_KEY [--host H] | keys reject HOST_OR_KEY | keys revoke HOST_KEY_OR_NAME
  keys accept-file FILE         pre-enroll many hosts: one `HOST KEY` per line (KEY: Z85 or a .pub file)
  keys add-operator NAME PUBFILE --role viewer|deployer|admin
  keygen --out PREFIX           make an operator CURVE keypair (PREFIX.key, PREFIX.pub)
  release keygen --out PREFIX   make an ed25519 release signing keypair
  release sign --key KEY FILE --service S --version V
                                write FILE.manifest and FILE.sig (upload sends them along)

Global options:
  --coordinator ENDPOINT[,...]  e.g. tcp://10.0.0.5:7602 (env GANTRY_COORDINATOR,
                                or `coordinator = ...` in ~/.config/gantry/cli.conf); a comma
                                list of a leader and its standbys: a standby's not_leader sends
                                the request once to the leader; a timeout, a refused connection
                                or none within 2 s, to the next endpoint
  --key FILE                    this operator's CURVE secret key (env GANTRY_KEY, cli.conf `key =`)
  --coordinator-key FILE        the coordinator's CURVE public key (env GANTRY_COORDINATOR_KEY,
                                cli.conf `coordinator_key =`); without both: plaintext (--insecure-dev)
  --json                        machine-readable output (stable field names)
  --timeout-ms N                how long to wait for each answer (default 10000)

Exit codes: 0 ok; 1 a rollout waited for did not succeed; 2 usage; 3 refused by the
coordinator; 4 coordinator unreachable.
Run `gantry COMMAND --help` for a command's options and examples.
)";

// ~/.config/gantry/cli.conf: `coordinator = ...`, `key = ...`, `coordinator_key = ...` (INI, read
// by Boost.Program_options). Keys it does not know are left alone (a newer gantry may have
// written them); a file that does not parse is a usage error naming it.
struct CliConf {
  std::string coordinator, key, coordinator_key;
};
CliConf read_cli_conf() {
  CliConf c;
  const char* home = std::getenv("HOME");
  if (!home) return c;
  const std::string path = std::string(home) + "/.config/gantry/cli.conf";
  std::ifstream in(path);
  if (!in) return c;
  po::options_description d;
  d.add_options()("coordinator", po::value(&c.coordinator))("key", po::value(&c.key))("coordinator_key",
                                                                                      po::value(&c.coordinator_key));
  po::variables_map vm;
  try {
    po::store(po::parse_config_file(in, d, /*allow_unregistered=*/true), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(path + ": " + e.what());
  }
  return c;
}

std::string s(const nlohmann::json& j, const char* k) {
  if (!j.contains(k) || j[k].is_null()) return "";
  if (j[k].is_string()) return j[k].get<std::string>();
  return j[k].dump();
}

// The CURVE settings for the operator socket, from --key / --coordinator-key (both or neither).
transport::CurveOptions curve_from(const Globals& g) {
  transport::CurveOptions c;
  if (g.key.empty() && g.coordinator_key.empty()) return c;
  if (g.key.empty() || g.coordinator_key.empty())
    throw UsageError("--key and --coordinator-key go together (your secret key and the coordinator's public key)");
  auto kp = security::read_curve_secret(g.key);
  if (!kp) throw UsageError("--key: " + kp.error().message);
  auto server = security::read_curve_public(g.coordinator_key);
  if (!server) throw UsageError("--coordinator-key: " + server.error().message);
  c.public_key = kp->public_z85;
  c.secret_key = kp->secret_z85;
  c.server_public_key = *server;
  return c;
}

// Commands that never talk to the coordinator: key generation and release signing.
int release_keygen(const std::vector<std::string>& args) {
  std::string out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::cout << "Usage: gantry release keygen --out PREFIX\n\nWrites PREFIX.key (ed25519 release signing key, 0600: "
                   "keep it "
                   "offline) and PREFIX.pub (give it to every agent as release_public_key).\n";
      return kOk;
    }
    if (args[i] == "--out" && i + 1 < args.size())
      out = args[++i];
    else
      throw UsageError("usage: gantry release keygen --out PREFIX");
  }
  if (out.empty()) throw UsageError("usage: gantry release keygen --out PREFIX");
  auto kp = security::generate_signing_keypair();
  if (!kp) {
    std::cerr << "gantry: " << kp.error().message << "\n";
    return kRefused;
  }
  if (Status st = security::write_signing_keypair(out, *kp); !st.ok()) {
    std::cerr << "gantry: " << st.error().message << "\n";
    return kRefused;
  }
  std::cout << "wrote " << out << ".key (release signing key, 0600: keep it offline) and " << out
            << ".pub (give it to every agent as release_public_key)\n";
  return kOk;
}

int release_sign(const std::vector<std::string>& args, bool json) {
  po::options_description d("Options");
  std::string key, file, service, version;
  d.add_options()("help,h", "show this help")("key", po::value(&key)->required(),
                                              "release signing key (gantry release keygen)")(
      "file", po::value(&file)->required(), "release artifact")(
      "service", po::value(&service)->required(), "service name")("version", po::value(&version)->required(),
                                                                  "release version");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout
          << "Usage: gantry release sign --key release.key FILE --service S --version V\n\n"
          << d
          << "\nWrites FILE.manifest (service, version, sha256, size, created) and FILE.sig (ed25519, hex).\n"
             "Example:\n  gantry release sign --key ~/keys/release.key web-2.4.1.tar --service web --version 2.4.1\n";
      return kOk;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  auto kp = security::read_signing_secret(key);
  if (!kp) throw UsageError("--key: " + kp.error().message);
  auto sha = sha256_file(file);
  if (!sha) throw UsageError("cannot read " + file + ": " + sha.error().message);
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) throw UsageError("cannot stat " + file);
  release::Manifest m;
  m.service = service;
  m.version = version;
  m.sha256 = *sha;
  m.size = static_cast<uint64_t>(st.st_size);
  m.created = release::utc_now_rfc3339();
  if (auto check = release::parse_manifest(m.to_bytes()); !check) throw UsageError(check.error().message);
  const std::string bytes = m.to_bytes();
  const std::string sig = release::sign(bytes, kp->secret_key);
  if (Status w = fs::write_file_atomic(file + ".manifest", bytes); !w.ok()) throw UsageError(w.error().message);
  if (Status w = fs::write_file_atomic(file + ".sig", sig + "\n"); !w.ok()) throw UsageError(w.error().message);
  if (json)
    std::cout << nlohmann::json{{"manifest", file + ".manifest"},
                                {"signature", file + ".sig"},
                                {"sha256", m.sha256},
                                {"size", m.size}}
                     .dump()
              << "\n";
  else
    std::cout << "signed " << service << " " << version << " (sha256 " << m.sha256.substr(0, 12) << "…, " << m.size
              << " bytes): " << file << ".manifest, " << file << ".sig\n";
  return kOk;
}

const char* kKeysHelp = R"(Usage: gantry keys COMMAND

Agent and operator keys on the coordinator (CURVE public keys, Z85).

Commands:
  list                          agent keys (pending/accepted/rejected/revoked) and operator keys
  accept KEY --host H           accept a pending agent key (Z85, from the host's agent.pub) as host H
  reject HOST_OR_KEY            reject a pending agent key
  revoke HOST_KEY_OR_NAME       revoke an accepted agent key or an operator key
  accept-file FILE              pre-enroll many hosts: one `HOST KEY` per line (KEY: Z85 or a .pub file)
  add-operator NAME PUBFILE --role viewer|deployer|admin
                                enroll an operator key with a role

Examples:
  gantry keys list
  gantry keys accept 'u#a6(thG^wd!UE0]yq+9s?%p28.9.s5>OqMZpc6q' --host web-1
  gantry keys add-operator alice alice.pub --role deployer
)";

const char* kRolloutHelp = R"(Usage: gantry rollout COMMAND [options]

Commands:
  plan  [plan options]          show the exact host-to-batch schedule, change nothing
  start [plan options]          start a rollout (--wait to follow it to the end)
  watch [ID] [--service S]      follow a rollout live; exit 0 if it succeeds
  show ID                       one rollout, with its hosts and event log
  pause|resume|promote|abort [ID] [--service S]
                                act on a rollout (default: the active one)

Run `gantry rollout COMMAND --help` for a command's options and examples.
)";

const char* kReleaseHelp = R"(Usage: gantry release COMMAND [options]

Commands:
  upload FILE --service S --version V
                                upload a release artifact to the coordinator
  sign --key KEY FILE --service S --version V
                                write FILE.manifest and FILE.sig (upload sends them along)
  keygen --out PREFIX           make an ed25519 release signing keypair

Run `gantry release COMMAND --help` for a command's options and examples.
)";

bool is_help(const std::string& w) { return w == "--help" || w == "-h" || w == "help"; }

// The help of a command group (keys, rollout, release) asked for as `gantry GROUP`, `gantry
// GROUP --help`, or for keys (whose commands take no options of their own) `gantry keys CMD
// --help`. Answered before any key is read or any coordinator is contacted.
std::optional<std::string> group_help(const std::vector<std::string>& words) {
  const std::string& group = words[0];
  const char* text = group == "keys"      ? kKeysHelp
                     : group == "rollout" ? kRolloutHelp
                     : group == "release" ? kReleaseHelp
                                          : nullptr;
  if (!text) return std::nullopt;
  if (words.size() >= 2 && is_help(words[1])) return std::string(text);
  if (group == "keys" && words.size() >= 3 &&
      std::any_of(words.begin() + 2, words.end(), [](const std::string& w) { return w == "--help" || w == "-h"; }))
    return std::string(text);
  return std::nullopt;
}

class App {
 public:
  explicit App(Globals g)
      : g_(std::move(g)), client_(split_endpoint_list(g_.coordinator), g_.timeout_ms, curve_from(g_)) {}

  int dispatch(const std::vector<std::string>& words) {
    if (words.empty()) throw UsageError("missing command");
    const std::string& c = words[0];
    std::vector<std::string> rest(words.begin() + 1, words.end());
    if (c == "hosts") return hosts(rest);
    if (c == "status") return status(rest);
    if (c == "history") return history(rest);
    if (c == "audit") return audit(rest);
    if (c == "rollback") return rollback(rest);
    if (c == "release") {
      if (rest.empty() || rest[0] != "upload") throw UsageError("usage: gantry release upload|sign|keygen ...");
      return release_upload(std::vector<std::string>(rest.begin() + 1, rest.end()));
    }
    if (c == "keys") return keys(rest);
    if (c == "rollout") {
      if (rest.empty()) throw UsageError("usage: gantry rollout plan|start|watch|show|pause|resume|promote|abort ...");
      std::string sub = rest[0];
      std::vector<std::string> r2(rest.begin() + 1, rest.end());
      if (sub == "start") return rollout_start(r2, false);
      if (sub == "plan") return rollout_start(r2, true);
      if (sub == "watch") return rollout_watch(r2);
      if (sub == "show") return rollout_show(r2);
      if (sub == "pause" || sub == "resume" || sub == "promote" || sub == "abort") return rollout_control(sub, r2);
      throw UsageError("unknown rollout command: " + sub);
    }
    throw UsageError("unknown command: " + c);
  }

 private:
  // Calls the coordinator; failures become exit codes via the exception.
  struct CallFailed {
    int code;
  };
  nlohmann::json call(const std::string& cmd, nlohmann::json args) {
    auto r = client_.call(cmd, std::move(args));
    if (!r) {
      if (g_.json) {
        std::cout << nlohmann::json{{"error", r.error().message}}.dump() << "\n";
      }
      std::cerr << "gantry: " << safe_text(r.error().message) << "\n";
      throw CallFailed{r.error().code == "refused" ? kRefused : kUnreachable};
    }
    return *r;
  }

 public:
  int run_guarded(const std::vector<std::string>& words) {
    try {
      return dispatch(words);
    } catch (const CallFailed& f) {
      return f.code;
    }
  }

 private:
  // Parses a command's options; prints help and returns false when --help was asked.
  bool parse(const std::vector<std::string>& args, po::options_description& desc, po::variables_map& vm,
             const po::positional_options_description* pos, const char* usage, const char* examples) {
    desc.add_options()("help,h", "show this help");
    po::command_line_parser p(args);
    p.options(desc);
    if (pos) p.positional(*pos);
    try {
      po::store(p.run(), vm);
      // --help before notify(): required options must not stand in the way of reading the help.
      if (vm.count("help")) {
        std::cout << "Usage: " << usage << "\n\n" << desc << "\nExamples:\n" << examples;
        return false;
      }
      po::notify(vm);
    } catch (const po::error& e) {
      throw UsageError(e.what());
    }
    return true;
  }

  int hosts(const std::vector<std::string>& args) {
    po::options_description d("Options");
    po::variables_map vm;
    if (!parse(args, d, vm, nullptr, "gantry hosts",
               "  gantry hosts\n  gantry --json hosts | jq '.hosts[] | select(.state==\"unknown\")'\n"))
      return kOk;
    auto r = call("hosts", nlohmann::json::object());
    if (g_.json) {
      std::cout << r.dump(2) << "\n";
      return kOk;
    }
    print_hosts(r["hosts"]);
    return kOk;
  }

  // A plan's batches, one row each: its number, size and hosts.
  static void print_batches(const nlohmann::json& batches) {
    Table t({"BATCH", "SIZE", "HOSTS"});
    int i = 0;
    for (const auto& b : batches) {
      std::string hs;
      for (const auto& h : b) hs += (hs.empty() ? "" : " ") + h.get<std::string>();
      t.row({std::to_string(++i), std::to_string(b.size()), hs});
    }
    t.print(std::cout);
  }

  void print_hosts(const nlohmann::json& hosts) {
    Table t({"HOST", "STATE", "SIGNALS", "LAST SEEN", "LABELS", "SERVICES"});
    for (const auto& h : hosts) {
      std::string labels, svcs;
      if (h.contains("labels") && h["labels"].is_object())
        for (auto& [k, v] : h["labels"].items())
          labels += (labels.empty() ? "" : ",") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
      const nlohmann::json services = h.contains("services") ? h["services"] : nlohmann::json::array();
      for (const auto& sv : services) {
        std::string cur = s(sv, "current_version");
        std::string st = s(sv, "state");
        const std::string phase = sv.contains("phase") ? s(sv, "phase") : "";
        if (!phase.empty() && st != "idle") st += ": " + phase;  // e.g. demo=v1(updating: verifying)
        svcs += (svcs.empty() ? "" : " ") + s(sv, "name") + "=" + (cur.empty() ? "-" : cur) +
                (st != "idle" && !st.empty() ? "(" + st + ")" : "");
        // Drift from the service's desired state: e.g. demo=v1(drift: desired v2)
        for (const auto& x : h.value("drift_services", nlohmann::json::array()))
          if (s(x, "service") == s(sv, "name")) svcs += "(drift: desired " + s(x, "desired") + ")";
      }
      // SIGNALS: whether its agent's SUB is up, so it hears abort and rollback at once; "-" from
      // a coordinator too old to say.
      t.row({s(h, "host_id"), s(h, "state"), h.contains("signal_channel") ? s(h, "signal_channel") : "-",
             ago(h.value("last_seen_ms_ago", -1LL)), labels.empty() ? "-" : labels, svcs.empty() ? "-" : svcs});
    }
    t.print(std::cout);
    if (t.empty()) std::cout << "(no hosts have connected yet)\n";
  }

  // A rollout's metric analysis: each query's last evaluation, and the gate it waits on.
  void print_analysis(const nlohmann::json& a) {
    const int gate = a.value("gate_batch", -1);
    std::cout << "  analysis:" << (gate >= 0 ? " gate after batch " + std::to_string(gate + 1) + " open" : "")
              << (a.value("hold", false) ? " (paused: an evaluation was inconclusive)" : "") << "\n";
    Table t({"QUERY", "VERDICT", "VALUE", "THRESHOLD", "FAILS", "EVALUATED", "MESSAGE"});
    for (const auto& q : a.value("queries", nlohmann::json::array())) {
      const nlohmann::json& v = q.contains("compared") && !q["compared"].is_null() ? q["compared"] : q["value"];
      t.row({s(q, "name"), s(q, "verdict"), v.is_null() ? "-" : (v.is_string() ? v.get<std::string>() : v.dump()),
             s(q, "threshold"), s(q, "consecutive_failures") + "/" + s(q, "failure_limit"),
             q.value("evaluations", 0) ? when(q.value("last_at", 0LL)) + " (" + s(q, "evaluations") + ")" : "-",
             s(q, "message")});
    }
    t.print(std::cout);
  }

  void print_rollout(const nlohmann::json& r, bool hosts_table) {
    // Fields read with contains()/value(): a standby's answer (or an older coordinator's) may
    // lack some, and a missing key must print as empty, not throw.
    const nlohmann::json c = r.contains("counts") ? r["counts"] : nlohmann::json::object();
    std::cout << "Rollout " << s(r, "id") << ": " << s(r, "service") << " -> " << s(r, "version") << " ("
              << s(r, "kind") << ")  phase: " << s(r, "phase")
              << (r.value("waiting_promote", false) ? " (waiting for promote)" : "") << "\n";
    std::cout << "  batch " << s(r, "batch") << " of " << s(r, "batches_total") << "; hosts: " << s(c, "total")
              << " total, " << s(c, "healthy") << " healthy, " << s(c, "failed") << " failed, " << s(c, "unknown")
              << " unknown, " << s(c, "ordered") << " in progress, " << s(c, "pending") << " pending";
    if (c.value("rolled_back", 0) + c.value("rolling_back", 0) + c.value("rollback_failed", 0) > 0) {
      std::cout << ", " << s(c, "rolled_back") << " rolled back, " << s(c, "rolling_back") << " rolling back, "
                << s(c, "rollback_failed") << " rollback failed";
    }
    std::cout << "\n";
    std::cout << "  started " << when(r.value("created_at", 0LL)) << " by " << s(r, "created_by");
    if (!s(r, "reason").empty()) std::cout << " — " << s(r, "reason");
    std::cout << "\n";
    if (!s(r, "end_reason").empty()) std::cout << "  " << s(r, "end_reason") << "\n";
    if (r.contains("analysis") && r["analysis"].is_object()) print_analysis(r["analysis"]);
    if (hosts_table) {
      Table t({"HOST", "BATCH", "STATE", "FROM", "MESSAGE"});
      const nlohmann::json hosts = r.contains("hosts") ? r["hosts"] : nlohmann::json::array();
      for (const auto& h : hosts) {
        t.row({s(h, "host_id"), std::to_string(h.value("batch", -1) + 1), s(h, "state"),
               s(h, "from_version").empty() ? "-" : s(h, "from_version"), s(h, "message")});
      }
      t.print(std::cout);
    }
  }

  // The first line of a standby's status: it answered from the store, read-only; act at the leader.
  static void print_standby_line(const nlohmann::json& r) {
    const nlohmann::json l = r.contains("leader") ? r["leader"] : nlohmann::json();
    if (l.is_object() && !s(l, "operator").empty())
      std::cout << "answered by a standby; the leader is " << (s(l, "name").empty() ? "(unnamed)" : s(l, "name"))
                << " at " << s(l, "operator") << "\n\n";
    else
      std::cout << "answered by a standby; no leader is known right now\n\n";
  }

  int status(const std::vector<std::string>& args) {
    po::options_description d("Options");
    std::string service;
    d.add_options()("service", po::value(&service), "only this service");
    po::variables_map vm;
    if (!parse(args, d, vm, nullptr, "gantry status [--service S]",
               "  gantry status\n  gantry status --service web --json\n"))
      return kOk;
    nlohmann::json a = nlohmann::json::object();
    if (!service.empty()) a["service"] = service;
    auto r = call("status", a);
    if (g_.json) {
      std::cout << r.dump(2) << "\n";
      return kOk;
    }
    if (r.is_object() && r.value("role", "") == "standby") print_standby_line(r);
    if (r["rollouts"].empty()) std::cout << "No rollouts yet.\n\n";
    for (const auto& ro : r["rollouts"]) {
      print_rollout(ro, true);
      std::cout << "\n";
    }
    if (r.contains("desired") && !r["desired"].empty()) {
      Table t({"SERVICE", "DESIRED", "SELECTOR", "CONVERGE", "DRIFTED", "SET BY"});
      for (const auto& x : r["desired"])
        t.row({s(x, "service"), s(x, "version"), s(x, "selector").empty() ? "(all)" : s(x, "selector"),
               x.value("held", false) ? s(x, "converge") + " (held)" : s(x, "converge"), s(x, "drifted_hosts"),
               s(x, "note")});
      t.print(std::cout);
      std::cout << "\n";
    }
    print_hosts(r["hosts"]);
    return kOk;
  }

  static std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UsageError("cannot read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // Uploads FILE as release (service, version) unless the coordinator already has it.
  static constexpr int kDefaultCopyTimeoutS = 120;
  static std::string names_text(const nlohmann::json& names) {
    std::string out;
    if (!names.is_array()) return out;
    for (const auto& n : names)
      if (n.is_string()) out += (out.empty() ? "" : ", ") + safe_text(n.get<std::string>(), 128);
    return out;
  }

  // With standby coordinators the leader acknowledges an upload (`complete`) once every
  // registered coordinator holds the artifact (they copy it within seconds); until then its
  // reply says who it waits for. Asked again with no data, at most `timeout_s` seconds.
  nlohmann::json await_copies(const std::string& service, const std::string& version, const std::string& sha,
                              size_t size, nlohmann::json r, int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    bool said = false;
    while (!r.value("complete", false)) {
      if (!r.contains("waiting_for")) {
        std::cerr << "gantry: the coordinator did not acknowledge the upload of release " << version << " of "
                  << service << " (" << r.value("received", uint64_t{0}) << " of " << size << " bytes received)\n";
        throw CallFailed{kRefused};
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        std::cerr << "gantry: release " << version << " of " << service << " is stored on " << names_text(r["on"])
                  << ", but " << names_text(r["waiting_for"]) << " did not copy it within " << timeout_s
                  << " s (their logs say why); run the upload again to ask again\n";
        throw CallFailed{kRefused};
      }
      if (!said && !g_.json) {
        std::cerr << "stored on " << names_text(r["on"]) << "; waiting for " << names_text(r["waiting_for"])
                  << " to copy it\n";
        said = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      r = ask_upload(service, version, sha, size);
    }
    return r;
  }
  // An upload's last request again, without data: how far it is (PROTOCOL.md, release.upload).
  nlohmann::json ask_upload(const std::string& service, const std::string& version, const std::string& sha,
                            size_t size) {
    return call("release.upload",
                {{"service", service}, {"version", version}, {"sha256", sha}, {"size", size}, {"offset", size}});
  }

  void upload(const std::string& file, const std::string& service, const std::string& version, int copy_timeout_s) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) throw UsageError("cannot read " + file + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw UsageError(file + " is not a regular file; a release is one archive file");
    std::string data = read_all(file);
    if (data.empty()) throw UsageError(file + " is empty; a release is one non-empty archive file");
    std::string sha = sha256_hex(data);
    auto have = call("release.get", {{"service", service}, {"version", version}});
    if (have.value("exists", false)) {
      if (have.value("sha256", "") != sha) {
        std::cerr << "gantry: release " << version << " of " << service << " already exists with another digest ("
                  << have.value("sha256", "") << "); versions are immutable — pick a new version\n";
        throw CallFailed{kRefused};
      }
      if (!g_.json)
        std::cerr << "release " << version << " of " << service << " is already on the coordinator (sha256 "
                  << sha.substr(0, 12) << "…)\n";
      await_copies(service, version, sha, data.size(), ask_upload(service, version, sha, data.size()), copy_timeout_s);
      return;
    }
    // FILE.manifest + FILE.sig (gantry release sign) travel along; agents check them.
    std::string manifest, signature;
    if (::access((file + ".manifest").c_str(), F_OK) == 0 || ::access((file + ".sig").c_str(), F_OK) == 0) {
      manifest = read_all(file + ".manifest");
      signature = read_all(file + ".sig");
      while (!signature.empty() && (signature.back() == '\n' || signature.back() == '\r' || signature.back() == ' '))
        signature.pop_back();
    } else if (!g_.json) {
      std::cerr << "warning: " << file << " is not signed (no " << file << ".manifest / .sig; see gantry release sign);"
                << " agents with release keys will refuse it\n";
    }
    const size_t kChunk = 512 * 1024;
    size_t off = 0;
    nlohmann::json r;
    do {
      size_t n = std::min(kChunk, data.size() - off);
      nlohmann::json a = {
          {"service", service},
          {"version", version},
          {"sha256", sha},
          {"size", data.size()},
          {"offset", off},
          {"data", nlohmann::json::binary(std::vector<uint8_t>(data.begin() + static_cast<long>(off),
                                                               data.begin() + static_cast<long>(off + n)))}};
      if (!manifest.empty()) {
        a["manifest"] = manifest;
        a["signature"] = signature;
      }
      r = call("release.upload", a);
      off += n;
      if (r.value("complete", false)) break;
    } while (off < data.size());
    r = await_copies(service, version, sha, data.size(), r, copy_timeout_s);
    if (!g_.json)
      std::cerr << "uploaded release " << version << " of " << service << " (" << data.size() << " bytes, sha256 "
                << sha.substr(0, 12) << "…)" << (r.contains("on") ? "; on " + names_text(r["on"]) : "") << "\n";
  }

  int release_upload(const std::vector<std::string>& args) {
    po::options_description d("Options");
    std::string file, service, version;
    int copy_timeout_s = kDefaultCopyTimeoutS;
    d.add_options()("file", po::value(&file), "release artifact (tar)")(
        "service", po::value(&service)->required(), "service name")("version", po::value(&version)->required(),
                                                                    "release version (immutable)")(
        "copy-timeout", po::value(&copy_timeout_s)->default_value(kDefaultCopyTimeoutS),
        "with standby coordinators: seconds to wait until every one holds it (exit 3 after)");
    po::positional_options_description pos;
    pos.add("file", 1);
    po::variables_map vm;
    if (!parse(args, d, vm, &pos, "gantry release upload FILE --service S --version V",
               "  gantry release upload web-2.4.1.tar --service web --version 2.4.1\n"))
      return kOk;
    if (file.empty()) throw UsageError("missing FILE");
    if (copy_timeout_s < 0 || copy_timeout_s > 86400) throw UsageError("--copy-timeout must be 0..86400 seconds");
    upload(file, service, version, copy_timeout_s);
    if (g_.json)
      std::cout
          << nlohmann::json{{"service", service}, {"version", version}, {"sha256", sha256_hex(read_all(file))}}.dump()
          << "\n";
    return kOk;
  }

  // Plan options shared by `rollout start`, `rollout plan` and `rollback`.
  struct PlanOpts {
    std::string file, batches, max_failures, max_failures_per_batch, min_healthy, healthy_deadline, host_timeout,
        progress_deadline, batch_delay, pause_after, domain_label, max_per_domain, unknown_hosts, unknown_wait,
        converge;
    int rollback_batch_size = -1;
    bool no_auto_rollback = false;
  };
  void add_plan_options(po::options_description& d, PlanOpts& p) {
    d.add_options()("file,f", po::value(&p.file), "YAML plan file (flags below override it)")(
        "batches", po::value(&p.batches), "ramp of batch sizes, e.g. 1,10%,50%,100%")(
        "max-failures", po::value(&p.max_failures), "failure budget for the whole rollout (count or N%)")(
        "max-failures-per-batch", po::value(&p.max_failures_per_batch), "failure budget per batch")(
        "unknown-hosts", po::value(&p.unknown_hosts), "fail | wait: how unreachable hosts count")(
        "unknown-wait", po::value(&p.unknown_wait), "with --unknown-hosts wait: how long, e.g. 60s")(
        "min-healthy-time", po::value(&p.min_healthy), "each host must stay healthy this long, e.g. 10s")(
        "healthy-deadline", po::value(&p.healthy_deadline), "each host must be healthy within this, e.g. 5m")(
        "host-timeout", po::value(&p.host_timeout), "no report this long after the order: the host failed")(
        "progress-deadline", po::value(&p.progress_deadline), "the whole rollout must finish within this")(
        "batch-delay", po::value(&p.batch_delay), "wait between batches, e.g. 30s")(
        "pause-after", po::value(&p.pause_after), "batch indexes (0-based) after which to wait for promote, e.g. 0")(
        "domain-label", po::value(&p.domain_label), "label naming the failure domain, e.g. zone")(
        "max-per-domain", po::value(&p.max_per_domain), "at most this many hosts (or N%) of one domain per batch")(
        "no-auto-rollback", po::bool_switch(&p.no_auto_rollback), "stop without rolling back when the budget is spent")(
        "rollback-batch-size", po::value(&p.rollback_batch_size), "hosts rolled back at a time (0: all at once)")(
        "converge", po::value(&p.converge),
        "auto | report: once this sets the desired release, repair drift or only report it (default auto)");
  }
  static nlohmann::json amount(const std::string& v) {
    if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos) return std::stoll(v);
    return v;
  }
  static nlohmann::json duration(const std::string& v) { return amount(v); }
  // PromQL written over several lines in YAML (`query: >` or `|`) is sent on one line: the wire
  // escapes control characters in every string (PROTOCOL.md §2), and to PromQL a line break is
  // only a space.
  static void one_line_queries(nlohmann::json& plan) {
    if (!plan.contains("analysis") || !plan["analysis"].is_object()) return;
    auto& qs = plan["analysis"]["queries"];
    if (!qs.is_array()) return;
    for (auto& q : qs) {
      if (!q.is_object()) continue;
      for (const char* k : {"query", "baseline"}) {
        if (!q.contains(k) || !q[k].is_string()) continue;
        std::string t = q[k].get<std::string>();
        for (char& c : t)
          if (c == '\n' || c == '\r' || c == '\t') c = ' ';
        while (!t.empty() && t.back() == ' ') t.pop_back();
        q[k] = t;
      }
    }
  }
  nlohmann::json plan_json(const PlanOpts& p, nlohmann::json& file_args) {
    nlohmann::json plan = nlohmann::json::object();
    if (!p.file.empty()) {
      auto f = read_yaml_file(p.file);
      if (!f) throw UsageError(f.error().message);
      for (auto& [k, v] : f->items()) {
        if (k == "service" || k == "version" || k == "selector" || k == "release" || k == "reason")
          file_args[k] = v;
        else
          plan[k] = v;
      }
      one_line_queries(plan);
    }
    auto list = [](const std::string& v) {
      nlohmann::json a = nlohmann::json::array();
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) {
        item.erase(0, item.find_first_not_of(' '));
        if (!item.empty()) a.push_back(amount(item));
      }
      return a;
    };
    if (!p.batches.empty()) plan["batches"] = list(p.batches);
    if (!p.max_failures.empty()) plan["max_failures"] = amount(p.max_failures);
    if (!p.max_failures_per_batch.empty()) plan["max_failures_per_batch"] = amount(p.max_failures_per_batch);
    if (!p.unknown_hosts.empty()) plan["unknown_hosts"] = p.unknown_hosts;
    if (!p.unknown_wait.empty()) plan["unknown_wait"] = duration(p.unknown_wait);
    if (!p.min_healthy.empty()) plan["min_healthy_time"] = duration(p.min_healthy);
    if (!p.healthy_deadline.empty()) plan["healthy_deadline"] = duration(p.healthy_deadline);
    if (!p.host_timeout.empty()) plan["host_timeout"] = duration(p.host_timeout);
    if (!p.progress_deadline.empty()) plan["progress_deadline"] = duration(p.progress_deadline);
    if (!p.batch_delay.empty()) plan["batch_delay"] = duration(p.batch_delay);
    if (!p.pause_after.empty()) plan["pause_after"] = list(p.pause_after);
    if (!p.domain_label.empty()) plan["domain_label"] = p.domain_label;
    if (!p.max_per_domain.empty()) plan["max_per_domain"] = amount(p.max_per_domain);
    if (p.no_auto_rollback) plan["auto_rollback"] = false;
    if (p.rollback_batch_size >= 0) plan["rollback"] = {{"batch_size", p.rollback_batch_size}};
    if (!p.converge.empty()) plan["converge"] = p.converge;
    return plan;
  }

  int rollout_start(const std::vector<std::string>& args, bool preview) {
    po::options_description d("Options");
    std::string service, version, release, selector, reason;
    bool wait = false;
    PlanOpts p;
    d.add_options()("service", po::value(&service), "service to roll")("version", po::value(&version),
                                                                       "target release version")(
        "release", po::value(&release), "release artifact to upload first (skipped if already uploaded)")(
        "selector", po::value(&selector),
        "hosts by labels, e.g. role=web,zone=eu-1 (default: every host running the service)")(
        "reason", po::value(&reason), "why: kept in the history")(
        "wait", po::bool_switch(&wait), "follow the rollout to its end; exit 1 unless it succeeds");
    add_plan_options(d, p);
    po::variables_map vm;
    const char* usage = preview
                            ? "gantry rollout plan --service S [--selector ...] [plan options]"
                            : "gantry rollout start --service S --version V [--release FILE] [plan options] [--wait]";
    const char* examples =
        preview
            ? "  gantry rollout plan --service web --batches 1,10%,50%,100% --domain-label zone --max-per-domain 1\n  "
              "gantry rollout plan -f plan.yaml --json\n"
            : "  gantry rollout start --service web --version 2.4.1 --release web-2.4.1.tar --batches 1,2,2 --wait\n"
              "  gantry rollout start -f plan.yaml --reason 'fix login bug' --wait\n"
              "  gantry rollout start --service web --version 2.4.2 --batches 1,25%,100% --pause-after 0 "
              "--max-failures 1\n";
    if (!parse(args, d, vm, nullptr, usage, examples)) return kOk;
    nlohmann::json file_args = nlohmann::json::object();
    nlohmann::json plan = plan_json(p, file_args);
    auto pick = [&](std::string& v, const char* k) {
      if (v.empty() && file_args.contains(k) && !file_args[k].is_null())
        v = file_args[k].is_string() ? file_args[k].get<std::string>() : file_args[k].dump();
    };
    pick(service, "service");
    pick(version, "version");
    pick(release, "release");
    pick(selector, "selector");
    pick(reason, "reason");
    if (service.empty()) throw UsageError("missing --service (or `service:` in the plan file)");
    nlohmann::json a = {{"service", service}, {"plan", plan}, {"selector", selector}};
    if (preview) {
      auto r = call("rollout.plan", a);
      if (g_.json) {
        std::cout << r.dump(2) << "\n";
        return kOk;
      }
      std::cout << "Plan for " << service << ": " << s(r, "hosts") << " host(s) in " << r["batches"].size()
                << " batch(es); failure budget " << s(r, "failure_budget_hosts") << " host(s)"
                << (r.contains("per_batch_budget_hosts") ? ", per batch " + s(r, "per_batch_budget_hosts") : "")
                << "\n";
      print_batches(r["batches"]);
      if (r.contains("analysis")) {
        std::cout << "Analysis queries, run once now:\n";
        Table t({"QUERY", "VALUE", "THRESHOLD", "NOW", "QUERY TEXT / ERROR"});
        for (const auto& q : r["analysis"]) {
          const auto& v = q["value"];
          t.row({s(q, "name"), v.is_null() ? "-" : v.dump(), s(q, "threshold"), s(q, "verdict"),
                 q.contains("error") ? s(q, "error") : s(q, "query")});
        }
        t.print(std::cout);
      }
      return kOk;
    }
    if (version.empty()) throw UsageError("missing --version (or `version:` in the plan file)");
    if (!release.empty()) upload(release, service, version, kDefaultCopyTimeoutS);
    a["version"] = version;
    a["reason"] = reason;
    auto r = call("rollout.start", a);
    if (!wait) {
      if (g_.json)
        std::cout << r.dump(2) << "\n";
      else
        print_rollout(r, false);
      return kOk;
    }
    return watch(r.value("id", 0ULL));
  }

  int rollout_watch(const std::vector<std::string>& args) {
    po::options_description d("Options");
    uint64_t id = 0;
    std::string service;
    d.add_options()("id", po::value(&id), "rollout id (default: the active one)")("service", po::value(&service),
                                                                                  "the active rollout of this service");
    po::positional_options_description pos;
    pos.add("id", 1);
    po::variables_map vm;
    if (!parse(args, d, vm, &pos, "gantry rollout watch [ID] [--service S]",
               "  gantry rollout watch\n  gantry rollout watch 42\n"))
      return kOk;
    if (id == 0) id = active_id(service);
    return watch(id);
  }

  uint64_t active_id(const std::string& service) {
    nlohmann::json a = nlohmann::json::object();
    if (!service.empty()) a["service"] = service;
    auto st = call("status", a);
    for (const auto& r : st["rollouts"]) {
      std::string ph = s(r, "phase");
      if (ph == "running" || ph == "paused" || ph == "rolling_back") return r.value("id", 0ULL);
    }
    if (!st["rollouts"].empty()) return st["rollouts"][0].value("id", 0ULL);
    throw UsageError("no rollout to watch");
  }

  // Follows a rollout like `kubectl rollout status`: prints each new event as a line, and the
  // progress (batch n of m, host counts, elapsed) redrawn in place on a terminal or as one plain
  // line per change otherwise. Exit 0 when it succeeds; 1 with the reason when it ends any other way.
  int watch(uint64_t id) {
    const bool tty = ::isatty(1) && !g_.json;
    int64_t last_event = 0;
    const auto start = std::chrono::steady_clock::now();
    std::string last_key;         // the progress line without the elapsed time: what "changed" means
    bool progress_shown = false;  // a tty progress line is on screen and must be erased first
    for (;;) {
      nlohmann::json r = call("rollout.get", {{"id", id}, {"events", true}, {"events_after", last_event}});
      if (tty && progress_shown) std::cout << "\r\033[K";
      progress_shown = false;
      for (const auto& e : r["events"]) {
        if (e.value("id", 0LL) <= last_event) continue;
        last_event = e.value("id", 0LL);
        if (!g_.json) std::cout << when(e.value("at", 0LL)).substr(11) << "  " << s(e, "message") << "\n";
      }
      const std::string phase = s(r, "phase");
      const auto& c = r["counts"];
      const bool terminal = phase == "succeeded" || phase == "failed" || phase == "rolled_back" || phase == "aborted";
      auto secs = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start).count();
      std::string key = "batch " + s(r, "batch") + " of " + s(r, "batches_total") + ": healthy " + s(c, "healthy") +
                        ", failed " + s(c, "failed") + ", unknown " + s(c, "unknown") + ", in progress " +
                        s(c, "ordered") + ", pending " + s(c, "pending");
      if (c.value("rolling_back", 0) + c.value("rolled_back", 0) + c.value("rollback_failed", 0) > 0) {
        key += ", rolling back " + s(c, "rolling_back") + ", rolled back " + s(c, "rolled_back");
      }
      key += " [" + phase +
             (r.value("waiting_promote", false) ? ", waiting for `gantry rollout promote " + s(r, "id") + "`" : "") +
             "]";
      const std::string line = key + " elapsed " + std::to_string(secs) + "s";
      if (!terminal && !g_.json) {
        if (tty) {
          std::cout << line << std::flush;
          progress_shown = true;
        } else if (key != last_key) {
          std::cout << "progress: " << line << "\n" << std::flush;
        }
        last_key = key;
      }
      if (terminal) {
        const std::string reason = s(r, "end_reason");
        if (g_.json) {
          std::cout << r.dump(2) << "\n";
        } else {
          print_rollout(r, true);
          if (phase == "succeeded") std::cout << "Rollout " << s(r, "id") << " succeeded after " << secs << "s.\n";
        }
        if (phase != "succeeded") {
          // The reason goes to stderr too, so it shows when stdout is piped or --json is on.
          std::cerr << "gantry: rollout " << s(r, "id") << " did not succeed: " << phase
                    << (reason.empty() ? "" : " — " + reason) << "\n";
        }
        std::cout << std::flush;
        return phase == "succeeded" ? kOk : kRolloutFailed;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 250 : 500));
    }
  }

  int rollout_show(const std::vector<std::string>& args) {
    po::options_description d("Options");
    uint64_t id = 0;
    d.add_options()("id", po::value(&id)->required(), "rollout id");
    po::positional_options_description pos;
    pos.add("id", 1);
    po::variables_map vm;
    if (!parse(args, d, vm, &pos, "gantry rollout show ID", "  gantry rollout show 42\n")) return kOk;
    auto r = call("rollout.get", {{"id", id}, {"events", true}});
    if (g_.json) {
      std::cout << r.dump(2) << "\n";
      return kOk;
    }
    print_rollout(r, true);
    print_timelines(r["hosts"]);
    std::cout << "\nEvents:\n";
    for (const auto& e : r["events"]) std::cout << "  " << when(e.value("at", 0LL)) << "  " << s(e, "message") << "\n";
    return kOk;
  }

  // Per host, when each step of its orders began (the agent's clock; a result at its arrival),
  // the first as a time of day and the others after it:
  //   web-3  draining 12:00:01.120  swapping +0.8s  restarting +0.8s  ...  healthy +3.4s
  static void print_timelines(const nlohmann::json& hosts) {
    size_t width = 0;
    for (const auto& h : hosts)
      if (h.contains("timeline") && !h["timeline"].empty()) width = std::max(width, s(h, "host_id").size());
    if (width == 0) return;
    std::cout << "\nTimeline (when each step began):\n";
    for (const auto& h : hosts) {
      if (!h.contains("timeline") || h["timeline"].empty()) continue;
      std::string id = s(h, "host_id");
      std::string line = "  " + id + std::string(width - id.size(), ' ');
      std::optional<long long> first;
      for (const auto& t : h["timeline"]) {
        std::string phase = s(t, "phase");
        std::replace(phase.begin(), phase.end(), '_', ' ');
        const long long at = t.value("at_ms", 0LL);
        line += "  " + phase + " " + (first ? offset_s(at - *first) : time_of_day_ms(at));
        if (!first) first = at;
      }
      std::cout << line << "\n";
    }
  }

  int rollout_control(const std::string& sub, const std::vector<std::string>& args) {
    po::options_description d("Options");
    uint64_t id = 0;
    std::string service;
    d.add_options()("id", po::value(&id), "rollout id (default: the active one)")("service", po::value(&service),
                                                                                  "the active rollout of this service");
    po::positional_options_description pos;
    pos.add("id", 1);
    po::variables_map vm;
    std::string usage = "gantry rollout " + sub + " [ID] [--service S]";
    if (!parse(args, d, vm, &pos, usage.c_str(), "  gantry rollout pause --service web\n  gantry rollout promote 42\n"))
      return kOk;
    nlohmann::json a = nlohmann::json::object();
    if (id) a["id"] = id;
    if (!service.empty()) a["service"] = service;
    auto r = call("rollout." + sub, a);
    if (g_.json)
      std::cout << r.dump(2) << "\n";
    else
      print_rollout(r, false);
    return kOk;
  }

  // Where a rollback's plan came from, as the `rollback` and `rollback.plan` replies say:
  //   Rollback of web to 2.4.0 (revision 3), reverting rollout 7:
  //     batches 1, 2, 2 (from rollout 7, which this reverts)
  static void print_rollback_plan(const nlohmann::json& r) {
    if (!r.contains("reverts_rollout") || !r.contains("plan")) return;
    const auto& plan = r["plan"];
    const uint64_t from = r.value("plan_from_rollout", 0ULL);
    std::set<std::string> given;
    for (const auto& g : r.value("plan_given", nlohmann::json::array())) given.insert(g.get<std::string>());
    auto source = [&](std::initializer_list<const char*> keys, bool first) -> std::string {
      for (const char* k : keys)
        if (given.count(k)) return " (given)";
      if (from == 0) return " (the default)";
      return " (from rollout " + std::to_string(from) + (first ? ", which this reverts)" : ")");
    };
    auto amount = [](const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
    std::string batches;
    for (const auto& b : plan.value("batches", nlohmann::json::array()))
      batches += (batches.empty() ? "" : ", ") + amount(b);
    std::cout << "Rollback of " << s(r, "service") << " to " << s(r, "version") << " (revision " << s(r, "to_revision")
              << ")" << (r.value("reverts_rollout", 0ULL) ? ", reverting rollout " + s(r, "reverts_rollout") : "")
              << ":\n";
    std::cout << "  batches " << batches << source({"batches"}, true) << "\n";
    std::cout << "  failure budget " << amount(plan.value("max_failures", nlohmann::json(0)))
              << (plan.contains("max_failures_per_batch") ? ", per batch " + amount(plan["max_failures_per_batch"])
                                                          : "")
              << source({"max_failures", "max_failures_per_batch"}, false) << "\n";
    const std::string label = plan.value("domain_label", "");
    std::cout << "  "
              << (label.empty() ? std::string("no failure domains")
                                : "failure domains by " + label +
                                      (plan.contains("max_per_domain")
                                           ? ", at most " + amount(plan["max_per_domain"]) + " per domain at once"
                                           : ""))
              << source({"domain_label", "max_per_domain"}, false) << "\n";
    std::string pauses;
    for (const auto& i : plan.value("pause_after", nlohmann::json::array()))
      pauses += (pauses.empty() ? "" : ", ") + std::to_string(i.get<long long>() + 1);
    if (!pauses.empty())
      std::cout << "  waits for `gantry rollout promote` after batch " << pauses << source({"pause_after"}, false)
                << "\n";
    if (from != 0)
      std::cout << "  the rest of its plan (verification, deadlines, automatic rollback) from rollout " << from
                << (given.empty() ? "" : ", but for what was given") << "\n";
  }

  int rollback(const std::vector<std::string>& args) {
    po::options_description d("Options");
    std::string service, reason, selector;
    uint64_t to_revision = 0;
    bool wait = false, dry_run = false;
    PlanOpts p;
    d.add_options()("service", po::value(&service)->required(), "service to roll back")(
        "to-revision", po::value(&to_revision), "revision number from `gantry history` (default: the previous one)")(
        "selector", po::value(&selector), "only these hosts")("reason", po::value(&reason), "why: kept in the history")(
        "wait", po::bool_switch(&wait), "follow it to the end; exit 1 unless it succeeds")(
        "dry-run", po::bool_switch(&dry_run), "show the target, the plan and its batches; change nothing");
    add_plan_options(d, p);
    po::variables_map vm;
    if (!parse(args, d, vm, nullptr,
               "gantry rollback --service S [--to-revision N] [plan options] [--dry-run] [--wait]",
               "  gantry rollback --service web --dry-run\n  gantry rollback --service web --wait\n"
               "  gantry rollback --service web --to-revision 3 --batches 50%\n\n"
               "Without plan options a rollback uses the plan of the rollout it reverts (the one that\n"
               "installed the current revision): its batches, failure budget, failure domains and the\n"
               "rest. Plan options given replace those fields only.\n"))
      return kOk;
    nlohmann::json file_args = nlohmann::json::object();
    nlohmann::json a = {
        {"service", service}, {"plan", plan_json(p, file_args)}, {"reason", reason}, {"selector", selector}};
    if (to_revision) a["to_revision"] = to_revision;
    if (dry_run) {
      auto r = call("rollback.plan", a);
      if (g_.json) {
        std::cout << r.dump(2) << "\n";
        return kOk;
      }
      if (r.contains("active_rollout")) {
        const auto n = r.value("rollback_batch_size", 0U);
        std::cout << "Rollout " << s(r, "active_rollout") << " of " << service
                  << " is active: a rollback rolls back the hosts it changed, "
                  << (n == 0 ? std::string("all at once") : std::to_string(n) + " at a time")
                  << " (its rollback plan)\n";
        return kOk;
      }
      print_rollback_plan(r);
      print_batches(r["batches"]);
      return kOk;
    }
    auto r = call("rollback", a);
    if (!g_.json) print_rollback_plan(r);
    if (wait) return watch(r.value("id", 0ULL));
    if (g_.json)
      std::cout << r.dump(2) << "\n";
    else
      print_rollout(r, false);
    return kOk;
  }

  int history(const std::vector<std::string>& args) {
    po::options_description d("Options");
    std::string service;
    d.add_options()("service", po::value(&service), "only this service");
    po::positional_options_description pos;
    pos.add("service", 1);
    po::variables_map vm;
    if (!parse(args, d, vm, &pos, "gantry history [SERVICE]", "  gantry history web\n")) return kOk;
    nlohmann::json a = nlohmann::json::object();
    if (!service.empty()) a["service"] = service;
    auto r = call("history", a);
    if (g_.json) {
      std::cout << r.dump(2) << "\n";
      return kOk;
    }
    Table t({"ID", "REV", "SERVICE", "VERSION", "KIND", "RESULT", "STARTED", "BY", "REASON", "ENDED WITH"});
    for (const auto& x : r["rollouts"]) {
      int64_t rev = x.value("revision", 0LL);
      t.row({s(x, "id"), rev > 0 ? std::to_string(rev) : "-", s(x, "service"), s(x, "version"), s(x, "kind"),
             s(x, "phase"), when(x.value("created_at", 0LL)), s(x, "created_by"), s(x, "reason"), s(x, "end_reason")});
    }
    t.print(std::cout);
    return kOk;
  }

  int audit(const std::vector<std::string>& args) {
    po::options_description d("Options");
    uint64_t limit = 50;
    d.add_options()("limit", po::value(&limit), "newest N entries");
    po::variables_map vm;
    if (!parse(args, d, vm, nullptr, "gantry audit [--limit N]", "  gantry audit --limit 20\n")) return kOk;
    auto r = call("audit", {{"limit", limit}});
    if (g_.json) {
      std::cout << r.dump(2) << "\n";
      return kOk;
    }
    Table t({"WHEN", "WHO", "COMMAND", "TARGET", "DECISION"});
    for (const auto& x : r["audit"])
      t.row({when(x.value("at", 0LL)), s(x, "who"), s(x, "command"), s(x, "target"), s(x, "decision")});
    t.print(std::cout);
    return kOk;
  }

  int keys(const std::vector<std::string>& args) {
    const char* usage =
        "usage: gantry keys list | accept HOST_OR_KEY [--host H] | reject HOST_OR_KEY | revoke HOST_KEY_OR_NAME | "
        "accept-file FILE | add-operator NAME PUBFILE --role viewer|deployer|admin (see `gantry keys --help`)";
    if (args.empty()) throw UsageError(usage);
    const std::string& sub = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (sub == "list") {
      if (!rest.empty()) throw UsageError(usage);
      auto r = call("keys.list", nlohmann::json::object());
      if (g_.json) {
        std::cout << r.dump(2) << "\n";
        return kOk;
      }
      Table a({"HOST", "STATE", "AGENT KEY", "SINCE", "BY"});
      for (const auto& k : r["agents"])
        a.row({s(k, "host_id").empty() ? "?" : s(k, "host_id"), s(k, "state"), s(k, "key"),
               when(k.value("updated_at", 0LL)), s(k, "updated_by")});
      std::cout << "Agent keys:\n";
      a.print(std::cout);
      if (a.empty()) std::cout << "(none)\n";
      Table o({"OPERATOR", "ROLE", "STATE", "KEY", "BY"});
      for (const auto& k : r["operators"])
        o.row({s(k, "name"), s(k, "role"), s(k, "state"), s(k, "key"), s(k, "updated_by")});
      std::cout << "\nOperator keys:\n";
      o.print(std::cout);
      if (o.empty()) std::cout << "(none)\n";
      return kOk;
    }
    if (sub == "accept" || sub == "reject" || sub == "revoke") {
      std::string target, host;
      for (size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == "--host" && i + 1 < rest.size() && sub == "accept")
          host = rest[++i];
        else if (target.empty() && rest[i].rfind("--", 0) != 0)
          target = rest[i];
        else
          throw UsageError(usage);
      }
      if (target.empty()) throw UsageError(usage);
      nlohmann::json a = {{"target", target}};
      if (!host.empty()) a["host"] = host;
      auto r = call("keys." + sub, a);
      if (g_.json)
        std::cout << r.dump(2) << "\n";
      else
        std::cout << s(r, "summary") << "\n";
      return kOk;
    }
    if (sub == "accept-file") {
      // A fleet's keys from configuration management: `HOST KEY` per line, '#' comments. One
      // request, one store transaction on the coordinator (keys.accept_many).
      if (rest.size() != 1) throw UsageError(usage);
      std::ifstream in(rest[0]);
      if (!in) throw UsageError("cannot read " + rest[0]);
      nlohmann::json list = nlohmann::json::array();
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        std::istringstream ls(line);
        std::string host, key, extra;
        if (!(ls >> host) || host[0] == '#') continue;
        if (!(ls >> key) || (ls >> extra))
          throw UsageError(rest[0] + ":" + std::to_string(n) +
                           ": want `HOST KEY` (KEY: Z85 public key or a .pub file)");
        if (!security::is_z85_key(key)) {
          auto k = security::read_curve_public(key);
          if (!k) throw UsageError(rest[0] + ":" + std::to_string(n) + ": " + k.error().message);
          key = *k;
        }
        list.push_back({{"host", host}, {"key", key}});
      }
      if (list.empty()) throw UsageError(rest[0] + ": no `HOST KEY` lines");
      auto r = call("keys.accept_many", {{"keys", list}});
      if (g_.json)
        std::cout << r.dump(2) << "\n";
      else
        std::cout << s(r, "summary") << "\n";
      return kOk;
    }
    if (sub == "add-operator") {
      std::string name, file, role;
      for (size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == "--role" && i + 1 < rest.size())
          role = rest[++i];
        else if (name.empty())
          name = rest[i];
        else if (file.empty())
          file = rest[i];
        else
          throw UsageError(usage);
      }
      if (name.empty() || file.empty() || role.empty()) throw UsageError(usage);
      auto key = security::read_curve_public(file);
      if (!key) throw UsageError(key.error().message);
      auto r = call("keys.add_operator", {{"name", name}, {"key", *key}, {"role", role}});
      if (g_.json)
        std::cout << r.dump(2) << "\n";
      else
        std::cout << s(r, "summary") << "\n";
      return kOk;
    }
    throw UsageError(usage);
  }

  Globals g_;
  Client client_;
};

}  // namespace

namespace {

// At most this many coordinators in a --coordinator list (three is the usual set-up).
constexpr size_t kMaxCoordinators = 16;

int run_unguarded(const std::vector<std::string>& args) {
  Globals g;
  CliConf conf = read_cli_conf();
  if (const char* e = std::getenv("GANTRY_COORDINATOR")) g.coordinator = e;
  if (g.coordinator.empty()) g.coordinator = conf.coordinator;
  if (g.coordinator.empty()) g.coordinator = "tcp://127.0.0.1:7602";
  if (const char* e = std::getenv("GANTRY_KEY")) g.key = e;
  if (g.key.empty()) g.key = conf.key;
  if (const char* e = std::getenv("GANTRY_COORDINATOR_KEY")) g.coordinator_key = e;
  if (g.coordinator_key.empty()) g.coordinator_key = conf.coordinator_key;
  // Global options go before the command, except --json and --timeout-ms, which may also come
  // anywhere after it (a command's own options, such as `release sign --key`, are its own).
  // Boost parses them in `NAME=VALUE` form, so a value starting with '-' reaches the check below.
  const auto takes_value = [](const std::string& a) {
    return a == "--coordinator" || a == "--key" || a == "--coordinator-key" || a == "--timeout-ms";
  };
  std::vector<std::string> global_args, words;
  size_t i = 0;
  for (; i < args.size() && args[i].size() > 1 && args[i][0] == '-'; ++i) {
    if (takes_value(args[i]) && i + 1 < args.size()) {
      global_args.push_back(args[i] + "=" + args[i + 1]);
      ++i;
    } else {
      global_args.push_back(args[i]);
    }
  }
  for (; i < args.size(); ++i) {
    if (args[i] == "--json") {
      global_args.push_back(args[i]);
    } else if (args[i] == "--timeout-ms" && i + 1 < args.size()) {
      global_args.push_back(args[i] + "=" + args[i + 1]);
      ++i;
    } else if (args[i].rfind("--timeout-ms=", 0) == 0) {
      global_args.push_back(args[i]);
    } else {
      words.push_back(args[i]);
    }
  }
  std::string timeout;
  po::options_description globals;
  globals.add_options()("help,h", "")("version", "")("json", po::bool_switch(&g.json))(
      "coordinator", po::value(&g.coordinator))("key", po::value(&g.key))(
      "coordinator-key", po::value(&g.coordinator_key))("timeout-ms", po::value(&timeout));
  po::variables_map vm;
  try {
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    po::store(po::command_line_parser(global_args).options(globals).style(style).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  if (vm.count("version")) {
    std::cout << "gantry " << kGantryVersion << "\n";
    return kOk;
  }
  if (vm.count("help") || (!words.empty() && words[0] == "help")) {
    std::cout << kTopHelp;
    return kOk;
  }
  if (vm.count("timeout-ms")) {
    int ms = 0;
    auto [end, ec] = std::from_chars(timeout.data(), timeout.data() + timeout.size(), ms);
    if (ec != std::errc() || end != timeout.data() + timeout.size() || ms < 1 || ms > 3600 * 1000)
      throw UsageError("--timeout-ms must be a number of milliseconds between 1 and 3600000, got '" + timeout + "'");
    g.timeout_ms = ms;
  }
  if (words.empty()) {
    std::cerr << kTopHelp;
    return kUsage;
  }
  if (auto help = group_help(words)) {
    std::cout << *help;
    return kOk;
  }
  {
    // Local commands: no coordinator, no operator key needed.
    if (words[0] == "keygen")
      return security::curve_keygen_main("gantry", std::vector<std::string>(words.begin() + 1, words.end()));
    if (words[0] == "release" && words.size() >= 2 && words[1] == "keygen")
      return release_keygen(std::vector<std::string>(words.begin() + 2, words.end()));
    if (words[0] == "release" && words.size() >= 2 && words[1] == "sign")
      return release_sign(std::vector<std::string>(words.begin() + 2, words.end()), g.json);
    const auto endpoints = split_endpoint_list(g.coordinator);
    if (endpoints.size() > kMaxCoordinators)
      throw UsageError("coordinator: more than " + std::to_string(kMaxCoordinators) + " endpoints");
    for (const auto& ep : endpoints)
      if (Status st = transport::check_connect_endpoint(ep); !st.ok())
        throw UsageError(
            "coordinator " + st.error().message +
            "; set it with --coordinator, GANTRY_COORDINATOR or `coordinator =` in ~/.config/gantry/cli.conf");
    App app(g);
    return app.run_guarded(words);
  }
}

}  // namespace

int run(const std::vector<std::string>& args) {
  try {
    return run_unguarded(args);
  } catch (const UsageError& e) {
    std::cerr << "gantry: " << safe_text(e.what()) << "\n(see `gantry --help`)\n";
    return kUsage;
  }
}
}  // namespace gantry::cli
