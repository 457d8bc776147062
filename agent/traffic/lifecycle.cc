#include "agent/traffic/lifecycle.h"

#include <algorithm>

#include "agent/traffic/haproxy_runtime.h"
#include "common/util/log.h"
#include "common/util/text.h"

namespace gantry::agent::traffic {
namespace {

std::shared_ptr<spdlog::logger> lg() { return log::get("agent.traffic"); }

std::string tail(const std::string& s, size_t n) {
  std::string t = s.size() > n ? s.substr(s.size() - n) : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return safe_text(t);  // a command's output: outside text, made safe where it enters
}

bool is_cancelled(const std::atomic<bool>* c) { return c && c->load(); }

}  // namespace

bool LifecycleSettings::any() const {
  return !block_traffic.command.empty() || !wait_inflight.command.empty() || drain_delay_ms > 0 ||
         !allow_traffic.command.empty() || !post_allow.command.empty() || post_allow_healthy_ms > 0 ||
         !haproxy.socket.empty();
}

Lifecycle::Lifecycle(LifecycleSettings settings, ProcessRunner& runner, std::shared_ptr<LoadBalancer> lb,
                     const Clock& clock, Sleep sleep)
    : s_(std::move(settings)), runner_(runner), lb_(std::move(lb)), clock_(clock), sleep_(std::move(sleep)) {}

std::map<std::string, std::string> Lifecycle::env(const StepContext& ctx, const std::string& phase) const {
  std::map<std::string, std::string> e = {
      {"GANTRY_PHASE", phase},
      {"GANTRY_SERVICE", ctx.service},
      {"GANTRY_ROOT", ctx.root},
      {"GANTRY_ORDER_ID", ctx.order_id},
      {"GANTRY_ROLLOUT_ID", std::to_string(ctx.rollout_id)},
      {"GANTRY_ORDER_KIND", ctx.kind},
      {"GANTRY_FROM_VERSION", ctx.from_version},
      {"GANTRY_TO_VERSION", ctx.to_version},
  };
  if (!ctx.slot.empty()) {
    e["GANTRY_SLOT"] = ctx.slot;
    e["GANTRY_SLOT_PORT"] = std::to_string(ctx.slot_port);
  }
  if (!s_.haproxy.socket.empty()) {
    e["GANTRY_HAPROXY_SOCKET"] = s_.haproxy.socket;
    e["GANTRY_HAPROXY_SERVER"] = s_.haproxy.backend + "/" + s_.haproxy.server;
  }
  return e;
}

Status Lifecycle::run_command(const StepCommand& c, const StepContext& ctx, const std::string& phase) {
  if (c.command.empty()) return Status::Ok();
  // Named as in the config: block_traffic, wait_inflight, allow_traffic, post_allow.
  const std::string name = &c == &s_.block_traffic   ? "block_traffic"
                           : &c == &s_.wait_inflight ? "wait_inflight"
                           : &c == &s_.allow_traffic ? "allow_traffic"
                                                     : "post_allow";
  auto r = runner_.run_shell(c.command, env(ctx, phase), c.timeout_ms);
  if (!r) return make_error("command", name + " command could not run: " + r.error().message);
  if (r->timed_out)
    return make_error("command", name + " command timed out after " + std::to_string(c.timeout_ms) + " ms");
  if (r->exit_code != 0) {
    std::string out = tail(r->output, 300);
    return make_error("command",
                      name + " command exited with " + std::to_string(r->exit_code) + (out.empty() ? "" : ": " + out));
  }
  return Status::Ok();
}

// Until the server has no session and no queued request, or the drain timeout: a timeout is
// not a failure (the service's own graceful stop finishes the rest), an unreachable HAProxy is.
Status Lifecycle::wait_sessions_drained(const std::atomic<bool>* cancelled) {
  const Millis deadline = clock_.now_ms() + s_.haproxy.drain_timeout_ms;
  for (;;) {
    auto st = lb_->stat();
    if (!st) return st.error();
    if (st->sessions == 0 && st->queued == 0) return Status::Ok();
    Millis now = clock_.now_ms();
    if (now >= deadline) {
      lg()->warn("{}: still {} sessions and {} queued after the drain timeout of {} ms; going on", lb_->describe(),
                 st->sessions, st->queued, s_.haproxy.drain_timeout_ms);
      return Status::Ok();
    }
    if (is_cancelled(cancelled)) return make_error("cancelled", "cancelled while draining");
    sleep_(std::min(s_.haproxy.poll_ms, deadline - now));
  }
}

// Until HAProxy's own health checks report the server UP (rise checks passed), or the timeout.
Status Lifecycle::wait_up(const std::atomic<bool>* cancelled) {
  const Millis deadline = clock_.now_ms() + s_.haproxy.up_timeout_ms;
  std::string last = "no answer";
  for (;;) {
    auto st = lb_->stat();
    if (st && st->up()) return Status::Ok();
    last = st ? "status " + st->status : st.error().message;
    Millis now = clock_.now_ms();
    if (now >= deadline)
      return make_error(failure::kAllowTraffic, lb_->describe() + " not UP within " +
                                                    std::to_string(s_.haproxy.up_timeout_ms) + " ms (" + last + ")");
    if (is_cancelled(cancelled)) return make_error("cancelled", "cancelled while waiting for the balancer");
    sleep_(std::min(s_.haproxy.poll_ms, deadline - now));
  }
}

// Undoes a partial block: the allow command and HAProxy ready, without waiting for UP (the old
// release never stopped, so HAProxy's checks keep it UP).
Status Lifecycle::unblock(const StepContext& ctx) {
  Status result;
  if (Status st = run_command(s_.allow_traffic, ctx, step::kAllowingTraffic); !st.ok()) result = st;
  if (lb_) {
    if (Status st = lb_->ready(); !st.ok() && result.ok()) result = st;
  }
  return result;
}

Status Lifecycle::block(const StepContext& ctx, const StepObserver& on_step, const std::atomic<bool>* cancelled,
                        bool allow_back) {
  if (!any()) return Status::Ok();
  auto fail = [&](const Error& e) -> Status {
    if (!allow_back) {
      lg()->error("{} {}: drain failed: {}", ctx.service, ctx.order_id, e.message);
      return make_error(failure::kDrain, "drain failed: " + e.message);
    }
    Status back = unblock(ctx);
    std::string msg =
        "drain failed: " + e.message +
        (back.ok() ? "; traffic allowed back" : "; allowing traffic back also failed: " + back.error().message);
    lg()->error("{} {}: {}", ctx.service, ctx.order_id, msg);
    return make_error(failure::kDrain, msg);
  };
  on_step(step::kDraining);
  if (Status st = run_command(s_.block_traffic, ctx, step::kDraining); !st.ok()) return fail(st.error());
  if (lb_) {
    if (Status st = lb_->drain(); !st.ok()) return fail(st.error());
  }
  on_step(step::kWaitingInflight);
  if (lb_) {
    if (Status st = wait_sessions_drained(cancelled); !st.ok()) {
      if (st.error().code == "cancelled") return st;
      return fail(st.error());
    }
  }
  if (s_.drain_delay_ms > 0) sleep_(s_.drain_delay_ms);
  if (Status st = run_command(s_.wait_inflight, ctx, step::kWaitingInflight); !st.ok()) return fail(st.error());
  return Status::Ok();
}

Status Lifecycle::allow(const StepContext& ctx, const HostActs& acts, const StepObserver& on_step,
                        const std::atomic<bool>* cancelled) {
  if (Status st = allow_traffic(ctx, on_step, cancelled); !st.ok()) return st;
  return verify_allowed(ctx, acts, on_step, cancelled);
}

Status Lifecycle::allow_traffic(const StepContext& ctx, const StepObserver& on_step,
                                const std::atomic<bool>* cancelled) {
  if (!any()) return Status::Ok();
  on_step(step::kAllowingTraffic);
  if (Status st = run_command(s_.allow_traffic, ctx, step::kAllowingTraffic); !st.ok())
    return make_error(failure::kAllowTraffic, "allow traffic failed: " + st.error().message);
  if (lb_) {
    if (Status st = lb_->ready(); !st.ok())
      return make_error(failure::kAllowTraffic, "allow traffic failed: " + st.error().message);
    if (Status st = wait_up(cancelled); !st.ok()) {
      if (st.error().code == "cancelled") return st;
      return make_error(failure::kAllowTraffic, "allow traffic failed: " + st.error().message);
    }
  }
  on_step(step::kTrafficAllowed);
  return Status::Ok();
}

Status Lifecycle::verify_allowed(const StepContext& ctx, const HostActs& acts, const StepObserver& on_step,
                                 const std::atomic<bool>* cancelled) {
  if (!any()) return Status::Ok();
  if (s_.post_allow.command.empty() && s_.post_allow_healthy_ms <= 0) return Status::Ok();
  if (is_cancelled(cancelled)) return make_error("cancelled", "cancelled before verifying the traffic");
  on_step(step::kVerifyingTraffic);
  if (Status st = run_command(s_.post_allow, ctx, step::kVerifyingTraffic); !st.ok())
    return make_error(failure::kPostAllow, "post-allow verification failed: " + st.error().message);
  if (s_.post_allow_healthy_ms > 0 && acts.verify_for) {
    if (Status st = acts.verify_for(s_.post_allow_healthy_ms); !st.ok()) {
      if (st.error().code == "cancelled") return st;
      return make_error(failure::kPostAllow, "post-allow verification failed: " + st.error().message);
    }
  }
  return Status::Ok();
}

Status Lifecycle::run(const StepContext& ctx, const HostActs& acts, bool traffic_blocked, const StepObserver& on_step,
                      const std::atomic<bool>* cancelled) {
  std::string drain_note;
  if (!traffic_blocked && any()) {
    Status st = block(ctx, on_step, cancelled);
    if (!st.ok()) {
      if (st.error().code == "cancelled") return st;
      if (ctx.kind != "revert") return st;
      // A revert goes on: the release it replaces is the one that failed.
      drain_note = st.error().message;
      lg()->warn("{} {}: reverting without a drain: {}", ctx.service, ctx.order_id, drain_note);
    }
  }
  auto noted = [&](Error e) -> Status {
    if (!drain_note.empty()) e.message += " (and " + drain_note + ")";
    return e;
  };
  on_step("swapping");
  if (Status st = acts.swap(); !st.ok()) return noted(st.error());
  on_step("restarting");
  if (Status st = acts.restart(); !st.ok()) return noted(st.error());
  on_step("verifying");
  if (Status st = acts.verify(); !st.ok()) return noted(st.error());
  if (Status st = allow(ctx, acts, on_step, cancelled); !st.ok()) return noted(st.error());
  return Status::Ok();
}

Expected<std::shared_ptr<LoadBalancer>> make_load_balancer(const HaproxySettings& h) {
  if (h.socket.empty()) return std::shared_ptr<LoadBalancer>();
  auto ep = parse_haproxy_endpoint(h.socket);
  if (!ep) return ep.error();
  if (!is_haproxy_name(h.backend) || !is_haproxy_name(h.server))
    return make_error("config", "HAProxy backend/server must be names of letters, digits, '-', '_', '.', ':' (got '" +
                                    h.backend + "/" + h.server + "')");
  return std::shared_ptr<LoadBalancer>(std::make_shared<HaproxyRuntime>(*ep, h.backend, h.server));
}

}  // namespace gantry::agent::traffic
