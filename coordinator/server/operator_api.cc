#include "coordinator/server/operator_api.h"

#include <algorithm>
#include <array>

#include "common/protocol/codec.h"
#include "common/release/manifest.h"
#include "common/transport/zmq_transport.h"
#include "common/util/log.h"
#include "common/util/names.h"
#include "common/util/text.h"
#include "coordinator/rollout/planner.h"
#include "coordinator/server/artifact_chunk.h"
#include "coordinator/server/rollout_views.h"

namespace gantry::coordinator {

namespace {

spdlog::logger* LO() {
  static const auto l = log::get("operator");
  return l.get();
}

// Raised by handlers for a bad request or a failed store read; becomes the reply's error.
struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename T>
T value_or_throw(Expected<T> e) {
  if (!e) throw OpError(e.error().message);
  return std::move(*e);
}

std::string arg_str(const nlohmann::json& a, const char* k, bool required = true) {
  if (!a.contains(k) || a[k].is_null()) {
    if (required) throw OpError(std::string("missing argument: ") + k);
    return {};
  }
  if (!a[k].is_string()) throw OpError(std::string("argument ") + k + " must be a string");
  return a[k].get<std::string>();
}

std::string arg_name(const nlohmann::json& a, const char* k, bool required = true) {
  std::string v = arg_str(a, k, required);
  if (!v.empty() && !is_safe_name(v))
    throw OpError(std::string("argument ") + k + " is not a valid name: " + v.substr(0, 64));
  return v;
}

uint64_t arg_u64(const nlohmann::json& a, const char* k, bool required = true) {
  if (!a.contains(k) || a[k].is_null()) {
    if (required) throw OpError(std::string("missing argument: ") + k);
    return 0;
  }
  if (!a[k].is_number_unsigned()) throw OpError(std::string("argument ") + k + " must be a non-negative integer");
  return a[k].get<uint64_t>();
}

// What a command acts on, for the audit log and the operator log line. The codec made every
// string in args safe text; safe_text() shortens it on a character boundary (a byte cut could
// split a UTF-8 sequence, and the audit view could not be rendered as JSON).
std::string target_of(const nlohmann::json& args) {
  std::string target;
  if (args.contains("service") && args["service"].is_string())
    target = safe_text(args["service"].get<std::string>(), 128);
  if (target.empty() && args.contains("id") && args["id"].is_number()) target = "rollout " + args["id"].dump();
  if (target.empty() && args.contains("target") && args["target"].is_string())
    target = safe_text(args["target"].get<std::string>(), 128);
  if (target.empty() && args.contains("name") && args["name"].is_string())
    target = safe_text(args["name"].get<std::string>(), 128);
  if (target.empty() && args.contains("keys") && args["keys"].is_array())
    target = std::to_string(args["keys"].size()) + " agent key(s)";
  return target;
}

}  // namespace

std::span<const OperatorApi::Command> OperatorApi::commands() {
  using A = OperatorApi::Audit;
  using C = OperatorApi;

  // Viewers read, deployers change rollouts and releases, admins manage keys. keys.list reads,
  // but who listed the keys is on the record. Peer coordinators (the last column) read what a
  // standby shows and fetch artifacts; artifact-chunk is theirs (and admins'), never audited:
  // a release is copied in thousands of chunks.
  static constexpr std::array<OperatorApi::Command, 22> kCommands = {{
      {"hosts", &C::op_hosts, Role::kViewer, false, A::kNone, true},
      {"status", &C::op_status, Role::kViewer, false, A::kNone, true},
      {"release.get", &C::op_release_get, Role::kViewer, false, A::kNone, true},
      {"release.upload", &C::op_release_upload, Role::kDeployer, true, A::kByHandler},
      {"rollout.plan", &C::op_rollout_plan, Role::kViewer, false, A::kNone},
      {"rollout.start", &C::op_rollout_start, Role::kDeployer, true, A::kRecorded},
      {"rollout.get", &C::op_rollout_get, Role::kViewer, false, A::kNone, true},
      {"rollout.pause", &C::op_rollout_control, Role::kDeployer, true, A::kRecorded},
      {"rollout.resume", &C::op_rollout_control, Role::kDeployer, true, A::kRecorded},
      {"rollout.promote", &C::op_rollout_control, Role::kDeployer, true, A::kRecorded},
      {"rollout.abort", &C::op_rollout_control, Role::kDeployer, true, A::kRecorded},
      {"rollback", &C::op_rollback, Role::kDeployer, true, A::kRecorded},
      {"rollback.plan", &C::op_rollback_plan, Role::kViewer, false, A::kNone},
      {"history", &C::op_history, Role::kViewer, false, A::kNone, true},
      {"audit", &C::op_audit, Role::kViewer, false, A::kNone, true},
      {"keys.list", &C::op_keys_list, Role::kAdmin, false, A::kRecorded},
      {"keys.accept", &C::op_keys_change, Role::kAdmin, true, A::kRecorded},
      {"keys.accept_many", &C::op_keys_accept_many, Role::kAdmin, true, A::kRecorded},
      {"keys.reject", &C::op_keys_change, Role::kAdmin, true, A::kRecorded},
      {"keys.revoke", &C::op_keys_change, Role::kAdmin, true, A::kRecorded},
      {"keys.add_operator", &C::op_keys_add_operator, Role::kAdmin, true, A::kRecorded},
      {"artifact-chunk", &C::op_artifact_chunk, Role::kAdmin, false, A::kNone, true},
  }};
  return kCommands;
}

const OperatorApi::Command* OperatorApi::find_command(std::string_view name) {
  for (const auto& c : commands())
    if (c.name == name) return &c;
  return nullptr;
}

bool OperatorApi::may_run(Role role, const Command& cmd) {
  return role == Role::kPeer ? cmd.peer : role >= cmd.min_role;
}

OperatorApi::OperatorApi(Deps deps) : d_(std::move(deps)) {}

void OperatorApi::audit_or_fail(const store::AuditRow& row, proto::OpReply& rep) {
  auto s = d_.store.audit(row);
  if (s.ok()) return;
  LO()->error("cannot write the audit record of {} by {}: {}", row.command, row.who, s.error().message);
  rep.ok = false;
  rep.error = (rep.error.empty() ? row.command + " ran" : rep.error) +
              "; its audit record could not be written: " + s.error().message;
}

proto::OpReply OperatorApi::handle(const proto::OpRequest& req, const std::string& who, Role role) {
  proto::OpReply rep;
  rep.request_id = req.request_id;
  const std::string target = target_of(req.args);
  const Command* cmd = find_command(req.command);
  if (!cmd) {
    rep.error = "unknown command: " + safe_text(req.command, 64);
    audit_or_fail({0, d_.clock.wall_ms(), who, safe_text(req.command, 64), target, "refused: unknown command"}, rep);
    return rep;
  }
  if (!may_run(role, *cmd)) {
    d_.metrics.auth_refused++;
    rep.error = std::string("permission denied: ") + req.command + " needs the " + role_name(cmd->min_role) + " role" +
                (cmd->peer ? " (or peer)" : "") + "; " + who + " is a " + role_name(role);
    audit_or_fail({0, d_.clock.wall_ms(), who, req.command, target,
                   std::string("refused: role ") + role_name(role) + " < " + role_name(cmd->min_role)},
                  rep);
    LO()->warn("{} ({}) may not run {} {}: refused", who, role_name(role), req.command, target);
    return rep;
  }
  // Its audit row says "ok" if the command's first rollout step commits (the executor carries
  // it); otherwise it is written below with the outcome.
  const bool recorded = cmd->audit == Audit::kRecorded;
  if (recorded) d_.executor.begin_command({0, d_.clock.wall_ms(), who, req.command, target, "ok"});
  try {
    rep.result = (this->*(cmd->handler))(Call{req.command, req.args, who});
    rep.ok = true;
  } catch (const OpError& e) {
    rep.error = e.what();
  } catch (const nlohmann::json::exception& e) {
    rep.error = std::string("bad arguments: ") + e.what();
  } catch (const std::exception& e) {
    // Nothing an operator sends may stop the coordinator.
    LO()->error("{} failed: {}", req.command, e.what());
    rep.error = std::string("internal error: ") + e.what();
  }
  if (recorded) {
    RolloutExecutor::CommandRecord rec = d_.executor.end_command();
    if (!rec.written) {  // no step carried it (refused, or a command that steps no rollout)
      for (const auto& e : rec.events) {
        if (auto s = d_.store.add_event(e); !s.ok()) {
          LO()->error("cannot record event of rollout {}: {}", e.rollout_id, s.error().message);
          rep.ok = false;
          rep.error = (rep.error.empty() ? req.command + " ran" : rep.error) +
                      "; its event could not be recorded: " + s.error().message;
        }
      }
      rec.audit.decision = rep.ok ? "ok" : "refused: " + rep.error;
      audit_or_fail(rec.audit, rep);
    } else if (!rep.ok) {  // its step was saved and acted on; the reply failed after that
      rec.audit.at = d_.clock.wall_ms();
      rec.audit.decision = "error after it took effect: " + rep.error;
      audit_or_fail(rec.audit, rep);
    }
  }
  if (recorded) LO()->info("{} ran {} {}: {}", who, req.command, target, rep.ok ? "ok" : rep.error);
  d_.changed.mark();
  return rep;
}

void OperatorApi::serve(zmq::socket_t& operators) {
  for (int i = 0; i < 1000; ++i) {
    bool dropped = false;
    auto in = transport::recv_routed(operators, &dropped);
    if (dropped) {
      d_.metrics.decode_errors++;
      continue;
    }
    if (!in) return;
    if (proven_) proven_(in->source_fd);
    d_.metrics.messages_in++;
    proto::OpReply reply;
    try {
      reply = answer(*in);
    } catch (const std::exception& e) {
      // Nothing an operator sends may stop the coordinator: this request gets an error.
      d_.metrics.handler_errors++;
      LO()->error("operator request dropped: its handler failed: {}", e.what());
      reply = proto::OpReply{};
      reply.error = std::string("internal error: ") + e.what();
    }
    if (auto s = transport::send_to(operators, in->identity, reply); !s.ok())
      LO()->warn("cannot send the reply to an operator: {}", s.error().message);
  }
}

proto::OpReply OperatorApi::answer(const transport::Incoming& in) {
  auto msg = proto::decode(in.payload);
  proto::OpReply reply;
  if (!msg) {
    d_.metrics.decode_errors++;
    LO()->warn("bad operator message: {}", msg.error().message);
    reply.error = "bad request: " + msg.error().message;
  } else if (auto* req = std::get_if<proto::OpRequest>(&*msg)) {
    if (!d_.secure) {
      std::string who = "insecure-dev";
      if (req->args.contains("user") && req->args["user"].is_string()) {
        std::string u = req->args["user"].get<std::string>();
        if (is_safe_name(u)) who += " (" + u + ")";
      }
      reply = handle(*req, who, Role::kAdmin);
    } else if (d_.keys.is_peer(in.user_id)) {
      // The installation's own server key: another coordinator (HA_CONTRACT, PROTOCOL.md §9.1).
      reply = handle(*req, "peer coordinator", Role::kPeer);
    } else if (const auto* op = d_.keys.op(in.user_id)) {
      // The key's name is who acted; a claimed $USER is not evidence of anything.
      if (auto role = parse_role(op->role)) {
        reply = handle(*req, op->name, *role);
      } else {
        reply.request_id = req->request_id;
        reply.error = "this operator key has no valid role (" + op->role.substr(0, 32) + ")";
        LO()->error("operator {} has an invalid role in the store: {}", op->name, op->role.substr(0, 32));
      }
    } else {
      // Revoked since its handshake: refused at this message, and on the record.
      d_.metrics.auth_refused++;
      std::string who = "key " + in.user_id.substr(0, 12) + "…";
      reply.request_id = req->request_id;
      reply.error = "this operator key is not (or no longer) authorized";
      audit_or_fail({0, d_.clock.wall_ms(), who, safe_text(req->command, 64), "", "refused: key not authorized"},
                    reply);
      LO()->warn("operator key {} is not authorized; {} refused", in.user_id, safe_text(req->command, 64));
    }
  } else {
    reply.error = std::string("operators may only send op_request, not ") + proto::type_name(proto::type_of(*msg));
  }
  return reply;
}

nlohmann::json OperatorApi::status(const std::string& service, bool with_timelines) {
  auto view = value_or_throw(
      status_view(d_.store, d_.executor, d_.registry, d_.epoch, d_.clock.wall_ms(), service, with_timelines));
  if (convergence_) {
    if (view.contains("hosts")) convergence_->annotate(view["hosts"]);
    view["desired"] = convergence_->desired_json();
  }
  if (!leader_name_.empty()) {
    view["role"] = "leader";
    view["name"] = leader_name_;
  }
  return view;
}

// ---- handlers -------------------------------------------------------------------

nlohmann::json OperatorApi::op_hosts(const Call&) {
  nlohmann::json hosts = d_.registry.to_json(d_.clock.wall_ms());
  if (convergence_) convergence_->annotate(hosts);
  return {{"hosts", std::move(hosts)}};
}

nlohmann::json OperatorApi::op_status(const Call& c) { return status(arg_name(c.args, "service", false)); }

nlohmann::json OperatorApi::op_release_get(const Call& c) {
  auto rel = value_or_throw(d_.store.release(arg_name(c.args, "service"), arg_name(c.args, "version")));
  if (!rel) return {{"exists", false}};
  return {{"exists", true},
          {"sha256", rel->sha256},
          {"size", rel->size},
          {"created_at", rel->created_at},
          {"signed", !rel->signature.empty()},
          {"manifest", rel->manifest},
          {"signature", rel->signature}};
}

nlohmann::json OperatorApi::op_release_upload(const Call& c) {
  const auto& args = c.args;
  std::string service = arg_name(args, "service"), version = arg_name(args, "version");
  std::string sha = arg_str(args, "sha256");
  if (!is_sha256_hex(sha)) throw OpError("sha256 must be 64 lowercase hex digits");
  uint64_t size = arg_u64(args, "size"), offset = arg_u64(args, "offset");
  if (size > (1ULL << 34)) throw OpError("release larger than 16 GiB");
  if (size == 0) throw OpError("release is empty: a release is one non-empty archive");
  std::string data;
  if (args.contains("data")) {
    if (!args["data"].is_binary()) throw OpError("data must be binary");
    const auto& bin = args["data"].get_binary();
    data.assign(bin.begin(), bin.end());
  }
  // The signed manifest travels with the release to every agent, which checks it against its
  // own release keys: the coordinator holds no release key and vouches for nothing.
  std::string manifest = arg_str(args, "manifest", false), signature = arg_str(args, "signature", false);
  if (manifest.size() > release::kMaxManifestBytes) throw OpError("manifest larger than 4096 bytes");
  if (!signature.empty() && (signature.size() != release::kSignatureHexChars ||
                             signature.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos))
    throw OpError("signature must be 128 hex digits");
  if (manifest.empty() != signature.empty()) throw OpError("manifest and signature go together");
  auto existing = value_or_throw(d_.store.release(service, version));
  if (existing) {
    if (existing->sha256 != sha)
      throw OpError("release " + version + " of " + service + " already exists with another digest (" +
                    existing->sha256 + "); versions are immutable");
    // Stored before: asked again, the reply says whether every coordinator holds it by now.
    return upload_stored(sha, existing->size);
  }
  auto p = value_or_throw(d_.artifacts.upload(sha, size, offset, data));
  if (p.complete) {
    store::ReleaseRow r{service, version, sha, size, p.path, d_.clock.wall_ms(), manifest, signature};
    if (manifest.empty()) {
      LO()->warn("release {} of {} was uploaded without a signed manifest; agents with release keys will refuse it",
                 version, service);
    } else if (auto m = release::parse_manifest(manifest); !m) {
      LO()->warn("release {} of {}: {}; agents will refuse it", version, service, m.error().message);
    } else if (auto chk = release::check_matches(*m, service, version, sha, size); !chk.ok()) {
      LO()->warn("release {} of {}: {}; agents will refuse it", version, service, chk.error().message);
    }
    if (auto s = d_.store.put_release(r); !s.ok()) throw OpError(s.error().message);
    if (auto s = d_.store.audit({0, d_.clock.wall_ms(), c.who, "release.upload", service + " " + version,
                                 "ok: sha256 " + sha + (manifest.empty() ? " (unsigned)" : " (signed manifest)")});
        !s.ok())
      throw OpError("release " + version + " of " + service +
                    " is stored, but its audit record could not be written: " + s.error().message);
    LO()->info("{} uploaded release {} of {} ({} bytes, sha256 {})", c.who, version, service, size, sha);
    // This coordinator's own copy (a record lost to a failed write here is written again when
    // the upload is asked again: upload_stored).
    if (copies_) record_own_copy(sha);
    return upload_stored(sha, size);
  }
  return {{"received", p.received}, {"complete", false}};
}

nlohmann::json OperatorApi::upload_stored(const std::string& sha, uint64_t size) {
  nlohmann::json out = {{"received", size}, {"complete", true}};
  if (!copies_) return out;
  auto h = holders_of(sha);
  // Its own record missing (a write that failed, or it took over before recording a copy it
  // holds): written now, and the holders read again.
  if (d_.artifacts.has(sha) &&
      std::find(h.waiting_for.begin(), h.waiting_for.end(), leader_name_) != h.waiting_for.end()) {
    record_own_copy(sha);
    h = holders_of(sha);
  }
  out["on"] = h.on;
  out["waiting_for"] = h.waiting_for;
  out["complete"] = h.waiting_for.empty();
  return out;
}

void OperatorApi::record_own_copy(const std::string& sha) {
  if (auto s = copies_->record({sha}, {}); !s.ok())
    throw OpError("the release is stored, but this coordinator could not record that it holds it: " +
                  s.error().message);
}

ArtifactCopies::Holders OperatorApi::holders_of(const std::string& sha) {
  auto h = copies_->holders(sha);
  if (!h) throw OpError("the release is stored, but which coordinators hold it cannot be read: " + h.error().message);
  return std::move(*h);
}

std::vector<rollout::HostCandidate> OperatorApi::select_hosts(const std::string& service, const std::string& selector) {
  auto sel = rollout::parse_selector(selector);
  if (!sel) throw OpError("bad selector: " + sel.error().message);
  std::vector<rollout::HostCandidate> out;
  for (const auto& [id, h] : d_.registry.hosts()) {
    auto svc = h.services.find(service);
    if (svc == h.services.end()) continue;
    if (!rollout::selector_matches(*sel, h.labels)) continue;
    out.push_back({id, h.labels, svc->second.current_version, h.online});
  }
  return out;
}

uint64_t OperatorApi::start_rollout(RolloutExecutor::StartRequest req) {
  // The executor checks all of this again; here the checks run in the order an operator fixes
  // them (another rollout running, the request's own plan, the release) before the hosts are
  // selected, so the first error named is the first to fix.
  if (!d_.executor.busy(req.service)) {
    if (auto plan = rollout::Plan::from_json(req.plan.is_null() ? nlohmann::json::object() : req.plan); !plan)
      throw OpError("bad plan: " + plan.error().message);
    auto rel = value_or_throw(d_.store.release(req.service, req.version));
    if (!rel) throw OpError("release " + req.version + " of " + req.service + " has not been uploaded");
    req.hosts = select_hosts(req.service, req.selector);
  }
  return value_or_throw(d_.executor.start(std::move(req)));
}

nlohmann::json OperatorApi::op_rollout_plan(const Call& c) {
  std::string service = arg_name(c.args, "service");
  auto plan = rollout::Plan::from_json(c.args.contains("plan") ? c.args["plan"] : nlohmann::json::object());
  if (!plan) throw OpError("bad plan: " + plan.error().message);
  auto hosts = select_hosts(service, arg_str(c.args, "selector", false));
  if (hosts.empty()) throw OpError("no host runs service " + service + " and matches the selector");
  auto sched = rollout::make_schedule(*plan, hosts);
  if (!sched) throw OpError("cannot plan: " + sched.error().message);
  nlohmann::json j = {{"service", service},
                      {"hosts", hosts.size()},
                      {"batches", sched->batches},
                      {"failure_budget_hosts", sched->failure_budget_hosts},
                      {"plan", plan->to_json()}};
  if (sched->per_batch_budget_hosts) j["per_batch_budget_hosts"] = *sched->per_batch_budget_hosts;
  // Each analysis query run once against its Prometheus: the plan is refused if one is invalid.
  if (plan->analysis.enabled() && analysis_preview_) {
    j["analysis"] = analysis_preview_(plan->analysis, service, hosts);
    for (const auto& q : j["analysis"]) {
      if (q.value("invalid", false))
        throw OpError("bad plan: analysis query " + q.value("name", std::string()) + ": " +
                      q.value("error", std::string()));
    }
  }
  return j;
}

nlohmann::json OperatorApi::op_rollout_start(const Call& c) {
  RolloutExecutor::StartRequest req;
  req.service = arg_name(c.args, "service");
  req.version = arg_name(c.args, "version");
  req.kind = "rollout";
  req.plan = c.args.contains("plan") ? c.args["plan"] : nlohmann::json::object();
  req.selector = arg_str(c.args, "selector", false);
  req.who = c.who;
  req.reason = arg_str(c.args, "reason", false);
  uint64_t id = start_rollout(std::move(req));
  // A summary: the loop is ordering the first batch, and the per-host lists are `rollout.get`'s.
  return rollout_summary(id);
}

uint64_t OperatorApi::find_rollout_arg(const nlohmann::json& args) {
  if (args.contains("id") && !args["id"].is_null()) {
    uint64_t id = arg_u64(args, "id");
    if (!d_.executor.find(id)) throw OpError("rollout " + args["id"].dump() + " is not active");
    return id;
  }
  std::string service = arg_name(args, "service", false);
  for (const auto& [id, a] : d_.executor.active()) {
    if (service.empty() || a.state.service == service) return id;
  }
  throw OpError(service.empty() ? "no active rollout" : "no active rollout of " + service);
}

nlohmann::json OperatorApi::op_rollout_get(const Call& c) {
  uint64_t id = arg_u64(c.args, "id");
  // events_after: only events with a larger id (a watcher asks for what it has not seen yet).
  int64_t after = c.args.contains("events_after") && c.args["events_after"].is_number_integer()
                      ? c.args["events_after"].get<int64_t>()
                      : 0;
  bool events = c.args.value("events", false);
  return value_or_throw(rollout_view_by_id(d_.store, d_.executor, id, events, after));
}

nlohmann::json OperatorApi::op_rollout_control(const Call& c) {
  uint64_t id = find_rollout_arg(c.args);
  rollout::Event ev;
  if (c.command == "rollout.pause")
    ev = rollout::EvPause{};
  else if (c.command == "rollout.resume")
    ev = rollout::EvResume{};
  else if (c.command == "rollout.promote")
    ev = rollout::EvPromote{};
  else
    ev = rollout::EvAbort{};
  // Committed with the step (the executor carries the command's record).
  d_.executor.add_command_event({0, id, d_.clock.wall_ms(), c.who + " asked to " + c.command.substr(8)});
  if (auto s = d_.executor.apply(id, ev); !s.ok()) throw OpError(s.error().message);
  return rollout_summary(id);
}

// Without the per-host lists: at 10,000 hosts those are ~1 MB of JSON, built on the loop while a
// rollback's Signal fans out; `rollout.get` has them.
nlohmann::json OperatorApi::rollout_summary(uint64_t id) {
  return value_or_throw(rollout_view_by_id(d_.store, d_.executor, id, false, 0, /*with_hosts=*/false));
}

OperatorApi::RollbackChoice OperatorApi::choose_rollback(const std::string& service, const nlohmann::json& args) {
  // The target: revision `to_revision`, or by default the newest earlier one with another version.
  auto rows = value_or_throw(d_.store.rollouts(service, false, 10000, /*with_hosts=*/false));
  std::vector<store::RolloutRow> revs;
  for (const auto& r : rows)
    if (r.revision > 0) revs.push_back(r);  // newest first
  RollbackChoice ch;
  int64_t to_rev = args.contains("to_revision") ? static_cast<int64_t>(arg_u64(args, "to_revision")) : 0;
  if (to_rev > 0) {
    for (const auto& r : revs) {
      if (r.revision == to_rev) {
        ch.version = r.version;
        ch.revision = r.revision;
      }
    }
    if (ch.version.empty()) throw OpError("service " + service + " has no revision " + std::to_string(to_rev));
  } else {
    if (revs.size() < 2) throw OpError("service " + service + " has no earlier revision to roll back to");
    const std::string current = revs[0].version;
    for (const auto& r : revs) {
      if (r.version != current) {
        ch.version = r.version;
        ch.revision = r.revision;
        break;
      }
    }
    if (ch.version.empty()) throw OpError("service " + service + " has no earlier revision with another version");
  }
  // The plan: that of the rollout whose release this replaces (the newest revision), so a
  // rollback is as careful as the rollout it reverts: its batches, budget, domains and the rest.
  // Fields the request gives win, one by one.
  ch.reverts = revs.empty() ? 0 : revs[0].id;
  ch.plan = nlohmann::json::object();
  if (!revs.empty() && revs[0].state.is_object() && revs[0].state.contains("plan") &&
      revs[0].state["plan"].is_object()) {
    ch.plan = revs[0].state["plan"];
    ch.plan_from = revs[0].id;
  }
  if (args.contains("plan") && !args["plan"].is_null()) {
    if (!args["plan"].is_object()) throw OpError("bad plan: a plan must be a map");
    for (const auto& [k, v] : args["plan"].items()) {
      ch.plan[k] = v;
      ch.given.push_back(k);
    }
  }
  return ch;
}

nlohmann::json OperatorApi::op_rollback(const Call& c) {
  const auto& args = c.args;
  std::string service = arg_name(args, "service");
  // An active rollout of the service: roll back its changed hosts now.
  for (const auto& [id, a] : d_.executor.active()) {
    if (a.state.service != service) continue;
    uint64_t rid = id;
    if (auto s = d_.executor.apply(rid, rollout::EvRollback{}); !s.ok()) throw OpError(s.error().message);
    return rollout_summary(rid);
  }
  // Otherwise: a new rollout to an earlier revision.
  RollbackChoice ch = choose_rollback(service, args);
  RolloutExecutor::StartRequest req;
  req.service = service;
  req.version = ch.version;
  req.kind = "rollback";
  req.plan = ch.plan;
  req.selector = arg_str(args, "selector", false);
  req.who = c.who;
  req.reason = arg_str(args, "reason", false);
  if (req.reason.empty()) req.reason = "rollback to " + ch.version;
  uint64_t id = start_rollout(std::move(req));
  nlohmann::json out = rollout_summary(id);
  out["to_revision"] = ch.revision;
  out["reverts_rollout"] = ch.reverts;
  out["plan_from_rollout"] = ch.plan_from;
  out["plan_given"] = ch.given;
  return out;
}

nlohmann::json OperatorApi::op_rollback_plan(const Call& c) {
  const auto& args = c.args;
  std::string service = arg_name(args, "service");
  for (const auto& [id, a] : d_.executor.active()) {
    if (a.state.service != service) continue;
    return {{"service", service}, {"active_rollout", id}, {"rollback_batch_size", a.state.plan.rollback_batch_size}};
  }
  RollbackChoice ch = choose_rollback(service, args);
  auto plan = rollout::Plan::from_json(ch.plan);
  if (!plan) throw OpError("bad plan: " + plan.error().message);
  auto hosts = select_hosts(service, arg_str(args, "selector", false));
  if (hosts.empty()) throw OpError("no host runs service " + service + " and matches the selector");
  auto sched = rollout::make_schedule(*plan, hosts);
  if (!sched) throw OpError("cannot plan: " + sched.error().message);
  nlohmann::json j = {{"service", service},
                      {"version", ch.version},
                      {"to_revision", ch.revision},
                      {"reverts_rollout", ch.reverts},
                      {"plan_from_rollout", ch.plan_from},
                      {"plan_given", ch.given},
                      {"hosts", hosts.size()},
                      {"batches", sched->batches},
                      {"failure_budget_hosts", sched->failure_budget_hosts},
                      {"plan", plan->to_json()}};
  if (sched->per_batch_budget_hosts) j["per_batch_budget_hosts"] = *sched->per_batch_budget_hosts;
  return j;
}

nlohmann::json OperatorApi::op_history(const Call& c) {
  return value_or_throw(history_view(d_.store, arg_name(c.args, "service", false), 1000));
}

nlohmann::json OperatorApi::op_audit(const Call& c) {
  int limit = c.args.contains("limit") ? static_cast<int>(std::min<uint64_t>(arg_u64(c.args, "limit"), 10000)) : 100;
  auto rows = value_or_throw(d_.store.audit_log(limit));
  nlohmann::json out = nlohmann::json::array();
  for (const auto& a : rows) {
    out.push_back({{"id", a.id},
                   {"at", a.at},
                   {"who", a.who},
                   {"command", a.command},
                   {"target", a.target},
                   {"decision", a.decision}});
  }
  return {{"audit", out}};
}

nlohmann::json OperatorApi::op_keys_list(const Call&) {
  nlohmann::json j = d_.keys.to_json();
  j["secure"] = d_.secure;
  return j;
}

nlohmann::json OperatorApi::op_keys_change(const Call& c) {
  std::string target = arg_str(c.args, "target");
  if (target.empty() || target.size() > 128) throw OpError("target must be a host id or a key");
  Expected<KeyChange> ch = make_error("usage", "unknown keys command");
  if (c.command == "keys.accept")
    ch = d_.keys.accept(target, arg_name(c.args, "host", false), c.who);
  else if (c.command == "keys.reject")
    ch = d_.keys.reject(target, c.who);
  else if (c.command == "keys.revoke")
    ch = d_.keys.revoke(target, c.who);
  if (!ch) throw OpError(ch.error().message);
  // Only a host whose accepted key lost its standing is disconnected: rejecting a pending key that
  // merely claimed a host's name leaves that host alone.
  for (const auto& host : ch->hosts_to_disconnect)
    d_.disconnect_host(host, "its key lost its standing (" + c.command + ")");
  nlohmann::json agents = nlohmann::json::array();
  for (const auto& r : ch->agents) agents.push_back({{"key", r.key}, {"host_id", r.host_id}, {"state", r.state}});
  nlohmann::json out = {{"summary", ch->summary}, {"agents", agents}};
  if (ch->op)
    out["operator"] = {{"key", ch->op->key}, {"name", ch->op->name}, {"role", ch->op->role}, {"state", ch->op->state}};
  return out;
}

nlohmann::json OperatorApi::op_keys_accept_many(const Call& c) {
  if (!c.args.contains("keys") || !c.args["keys"].is_array())
    throw OpError("keys must be an array of {\"host\", \"key\"}");
  const auto& in = c.args["keys"];
  // The operator socket's 4 MiB frame limit bounds this anyway (about 50,000 entries).
  if (in.size() > 100000) throw OpError("at most 100000 keys per request");
  std::vector<std::pair<std::string, std::string>> host_keys;
  host_keys.reserve(in.size());
  for (const auto& e : in) {
    if (!e.is_object() || !e.contains("host") || !e["host"].is_string() || !e.contains("key") || !e["key"].is_string())
      throw OpError("keys must be an array of {\"host\", \"key\"}");
    host_keys.emplace_back(e["host"].get<std::string>(), e["key"].get<std::string>());
  }
  auto ch = d_.keys.accept_many(host_keys, c.who);
  if (!ch) throw OpError(ch.error().message);
  size_t accepted = 0, revoked = 0;
  for (const auto& row : ch->agents) {
    if (row.state == "accepted")
      accepted++;
    else
      revoked++;
  }
  for (const auto& host : ch->hosts_to_disconnect) d_.disconnect_host(host, "its key was replaced");
  return {{"summary", ch->summary}, {"accepted", accepted}, {"revoked", revoked}};
}

nlohmann::json OperatorApi::op_keys_add_operator(const Call& c) {
  auto role = parse_role(arg_str(c.args, "role"));
  if (!role) throw OpError("role must be viewer, deployer or admin");
  auto ch = d_.keys.add_operator(arg_name(c.args, "name"), arg_str(c.args, "key"), *role, c.who);
  if (!ch) throw OpError(ch.error().message);
  return {{"summary", ch->summary},
          {"operator", {{"key", ch->op->key}, {"name", ch->op->name}, {"role", ch->op->role}}}};
}

// For peer coordinators that lack an artifact (coordinator/server/artifact_chunk.h).
nlohmann::json OperatorApi::op_artifact_chunk(const Call& c) {
  auto r = artifact_chunk(d_.artifacts, c.args);
  if (!r) throw OpError(r.error().message);
  return std::move(*r);
}

}  // namespace gantry::coordinator
