// The operator API: one declarative table of commands (name, handler, least role, whether it
// mutates, how it is audited), the checks every command passes before its handler runs, and
// the operator socket's request/reply loop. A command missing from the table is refused; an
// audit or store write that fails is an error in the reply, never dropped.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/protocol/messages.h"
#include "common/transport/zmq_transport.h"
#include "common/util/clock.h"
#include "coordinator/fleet/registry.h"
#include "coordinator/server/artifact_copies.h"
#include "coordinator/server/artifacts.h"
#include "coordinator/server/change_flag.h"
#include "coordinator/server/convergence.h"
#include "coordinator/server/keyring.h"
#include "coordinator/server/metrics.h"
#include "coordinator/server/rollout_executor.h"
#include "coordinator/store/store.h"

namespace gantry::coordinator {

class OperatorApi {
 public:
  // How a command is written to the audit log.
  enum class Audit {
    kNone,       // reads: not audited (refusals still are)
    kRecorded,   // one row with the outcome; it rides in the first rollout step the command causes
    kByHandler,  // the handler writes its own row once it has what the row says (release.upload)
  };
  struct Call {
    const std::string& command;
    const nlohmann::json& args;
    const std::string& who;
  };
  using Handler = nlohmann::json (OperatorApi::*)(const Call&);
  struct Command {
    std::string_view name;
    Handler handler;
    Role min_role;
    bool mutates;
    Audit audit;
    bool peer = false;  // a peer coordinator (Role::kPeer) may run it; no one else's role counts
  };
  // Whether `role` may run `cmd`: peers the commands marked for them, the others by rank.
  static bool may_run(Role role, const Command& cmd);
  // Every command there is; anything else is refused.
  static std::span<const Command> commands();
  static const Command* find_command(std::string_view name);

  struct Deps {
    store::Store& store;
    RolloutExecutor& executor;
    fleet::Registry& registry;
    ArtifactStore& artifacts;
    KeyRing& keys;
    Metrics& metrics;
    ChangeFlag& changed;
    const Clock& clock;
    bool secure;     // CURVE on: operators are known by key; off (--insecure-dev): everyone is admin
    uint64_t epoch;  // this coordinator's start counter, shown in status
    // Takes a host whose key lost its standing out of the fleet (and out of its rollouts) at once.
    std::function<void(const std::string& host_id, const std::string& why)> disconnect_host;
  };
  explicit OperatorApi(Deps deps);

  // One request from `who` holding `role`: checked against the table, run, audited.
  proto::OpReply handle(const proto::OpRequest& req, const std::string& who, Role role);
  // Serves the requests waiting on the operator ROUTER (a bounded number per call). A request
  // whose handling throws gets an error reply; the next is served.
  void serve(zmq::socket_t& operators);
  // Called with the connection (ZMQ_SRCFD) of every request serve reads: its handshake is over.
  void on_connection_proven(std::function<void(int fd)> f) { proven_ = std::move(f); }
  // How `rollout plan` evaluates a plan's analysis queries once (coordinator/analysis/): one JSON
  // object per query, `invalid` set where the query itself is wrong. Unset: not evaluated.
  using AnalysisPreview = std::function<nlohmann::json(const rollout::AnalysisSpec&, const std::string& service,
                                                       const std::vector<rollout::HostCandidate>& hosts)>;
  void set_analysis_preview(AnalysisPreview f) { analysis_preview_ = std::move(f); }
  // Where `hosts` and `status` get each host's drift and each service's desired state from.
  // Unset: they show none.
  void set_convergence(const Convergence* c) { convergence_ = c; }
  // On the etcd store: `status` says this coordinator leads and its name (standbys say
  // "standby", coordinator/ha/standby_server.h). Unset (SQLite): neither is shown.
  void set_leader_name(std::string name) { leader_name_ = std::move(name); }
  // With standby coordinators: release.upload is acknowledged ("complete") once every
  // registered coordinator holds the artifact (server/artifact_copies.h). Unset: once stored.
  void set_copies(ArtifactCopies* copies) { copies_ = copies; }
  // The reply to one request as read from the socket: decoded, its key's role looked up, handled.
  proto::OpReply answer(const transport::Incoming& in);

  // The status JSON (/status and `gantry status`).
  nlohmann::json status(const std::string& service = "", bool with_timelines = false);

 private:
  nlohmann::json op_hosts(const Call& c);
  nlohmann::json op_status(const Call& c);
  nlohmann::json op_release_get(const Call& c);
  nlohmann::json op_release_upload(const Call& c);
  nlohmann::json op_rollout_plan(const Call& c);
  nlohmann::json op_rollout_start(const Call& c);
  nlohmann::json op_rollout_get(const Call& c);
  nlohmann::json op_rollout_control(const Call& c);
  nlohmann::json op_rollback(const Call& c);
  nlohmann::json op_rollback_plan(const Call& c);
  nlohmann::json op_history(const Call& c);
  nlohmann::json op_audit(const Call& c);
  nlohmann::json op_keys_list(const Call& c);
  nlohmann::json op_keys_change(const Call& c);
  nlohmann::json op_keys_accept_many(const Call& c);
  nlohmann::json op_keys_add_operator(const Call& c);
  nlohmann::json op_artifact_chunk(const Call& c);
  // The reply to an upload whose bytes are all stored here: complete once every coordinator
  // holds them (with copies_), with who does and who does not yet.
  nlohmann::json upload_stored(const std::string& sha, uint64_t size);
  // This coordinator's record that it holds `sha` (server/artifact_copies.h), and who holds it:
  // both throw OpError, naming the release as stored, when etcd cannot be written or read.
  void record_own_copy(const std::string& sha);
  ArtifactCopies::Holders holders_of(const std::string& sha);

  std::vector<rollout::HostCandidate> select_hosts(const std::string& service, const std::string& selector);
  // Checks, selects the hosts and starts (rollout.start, rollback to a revision).
  // What a rollback that starts a new rollout goes back to, and with which plan.
  struct RollbackChoice {
    std::string version;             // the release it installs
    int64_t revision = 0;            // whose revision that is
    uint64_t reverts = 0;            // the rollout whose release it replaces (the newest revision)
    uint64_t plan_from = 0;          // the rollout the plan comes from (0: none stored)
    nlohmann::json plan;             // that rollout's plan with the request's fields over it
    std::vector<std::string> given;  // the plan fields the request gave
  };
  RollbackChoice choose_rollback(const std::string& service, const nlohmann::json& args);
  uint64_t start_rollout(RolloutExecutor::StartRequest req);
  uint64_t find_rollout_arg(const nlohmann::json& args);
  // The reply of the commands that change a rollout: its view without the per-host lists.
  nlohmann::json rollout_summary(uint64_t id);
  // Writes an audit row; a failure is appended to `rep`'s error (and makes it not ok).
  void audit_or_fail(const store::AuditRow& row, proto::OpReply& rep);

  Deps d_;
  std::function<void(int fd)> proven_;
  AnalysisPreview analysis_preview_;
  const Convergence* convergence_ = nullptr;
  std::string leader_name_;
  ArtifactCopies* copies_ = nullptr;
};

}  // namespace gantry::coordinator
