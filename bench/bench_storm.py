"""Figure 4: reconnect storm. The coordinator runs secure (CURVE, ZAP, every simulated agent
with its own key pair, enrolled in one `gantry keys accept-file`), all agents are welcomed, the
coordinator is killed with SIGKILL and started again on the same state dir; time from the new
process's start to the last agent's Welcome, per-agent reconnect percentiles, agents left behind
and whether heartbeats keep flowing (no welcomed agent times out again).

Baseline in the same run: the same storm against `gantry-fleet-sim floor` (a bare CURVE ROUTER
with an allow-all ZAP handler in its loop: handshake cost, no allowlist, no store), SIGKILLed and
restarted the same way with the same simulated agents."""

import os
import signal
import subprocess
import time

from bench import Env, Proc, pct, record, wait_until

TICK = os.sysconf("SC_CLK_TCK")
NSTAT_KEYS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPReqQFullDoCookies", "TcpExtSyncookiesSent",
              "TcpExtTCPSynRetrans", "TcpRetransSegs", "TcpActiveOpens", "TcpPassiveOpens", "TcpAttemptFails")

SEED = "gantry-bench-storm"
# Extra options for the coordinator and the floor, to compare settings in one build
# (e.g. GANTRY_BENCH_COORD_ARGS="--io-threads 1" GANTRY_BENCH_FLOOR_ARGS="--io-threads 1").
COORD_EXTRA = os.environ.get("GANTRY_BENCH_COORD_ARGS", "").split()
FLOOR_EXTRA = os.environ.get("GANTRY_BENCH_FLOOR_ARGS", "").split()
SIM_EXTRA = os.environ.get("GANTRY_BENCH_SIM_ARGS", "").split()  # e.g. "--io-threads 1"


def keygen(env, tool, prefix):
    """A CURVE key pair via the product's own keygen; returns (secret file, public file, public Z85)."""
    r = subprocess.run([tool, "keygen", "--out", prefix], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{tool} keygen failed: {r.stdout}{r.stderr}")
    return prefix + ".key", prefix + ".pub", open(prefix + ".pub").read().strip()


def secret_z85(path):
    for line in open(path):
        line = line.strip()
        if len(line) == 40:
            return line
    raise RuntimeError(f"no Z85 key in {path}")


epochs = Env.epochs  # {epoch: [agents whose newest welcome has it, newest welcome time]}


def welcomes(sims, epoch):
    """Per-agent first-welcome times of `epoch`, from the simulators' exit lines (stop them first)."""
    out = []
    for s in sims:
        for ev in s.event("welcomes"):
            if ev["epoch"] == epoch:
                out.extend(ev["us"])
    return out


def nstat():
    """System-wide TCP counters (other work on the machine adds to them: compare runs)."""
    try:
        out = subprocess.run(["nstat", "-az"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    vals = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] in NSTAT_KEYS:
            vals[f[0]] = int(f[1])
    return vals


def thread_ticks(pid):
    """{thread name (numbered when repeated): utime+stime ticks} of one process."""
    out = {}
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        parts = raw.rsplit(")", 1)[1].split()
        key, k = name, 1
        while key in out:
            k += 1
            key = f"{name}#{k}"
        out[key] = int(parts[11]) + int(parts[12])
    return out


def cpu_s(before, after):
    return {k: (v - before.get(k, 0)) / TICK for k, v in after.items()}


def storm(env, sims, n, kill, start, epoch, down_s, watch_s, server_pid=None, perf_dir=None, label=""):
    """Kill the server, restart it, wait for every agent's welcome of `epoch`; then watch
    heartbeats for `watch_s`. Returns the figures (times relative to the restart's exec), and
    what the storm cost: CPU seconds of the server per thread and of the simulators, the
    system's TCP counters (listen overflows, SYN retransmissions) over the storm."""
    kill()
    time.sleep(down_s)
    sim_pids = [s.p.pid for s in sims]
    sims0 = {pid: thread_ticks(pid) for pid in sim_pids}
    conn0 = {k: Env.total(sims, k) for k in ("connects", "reconnects", "timeouts", "hellos", "hello_required")}
    net0 = nstat()
    t_start = time.time_ns() // 1000
    start()
    pid = server_pid() if server_pid else None
    srv0 = thread_ticks(pid) if pid else {}
    perfs = []
    if perf_dir and pid:  # software clock: works in VMs
        for who, p in (("server", pid), ("sim0", sim_pids[0])):
            perfs.append(subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "499", "-g", "-p", str(p), "-o",
                                           os.path.join(perf_dir, f"perf-{label}-{who}.data")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_until(lambda: epochs(sims).get(epoch, [0])[0] >= n, 60, 0.05, f"every agent welcomed in epoch {epoch}")
    except TimeoutError:
        pass
    t_end = time.time_ns() // 1000
    srv1 = thread_ticks(pid) if pid else {}
    sims1 = {p: thread_ticks(p) for p in sim_pids}
    net1 = nstat()
    for pp in perfs:
        pp.send_signal(signal.SIGINT)
    for pp in perfs:
        try:
            pp.wait(60)
        except subprocess.TimeoutExpired:
            pp.kill()
    cost = {"wall_s": (t_end - t_start) / 1e6, "server": cpu_s(srv0, srv1),
            "sims": sum(sum(cpu_s(sims0[p], sims1[p]).values()) for p in sim_pids),
            "sim_threads": {}, "net": {k: net1.get(k, 0) - net0.get(k, 0) for k in net1},
            "agents": {k: Env.total(sims, k) - v for k, v in conn0.items()}}
    for p in sim_pids:  # simulator threads, summed over the processes by name
        for k, v in cpu_s(sims0[p], sims1[p]).items():
            k = k.split("#")[0]
            cost["sim_threads"][k] = cost["sim_threads"].get(k, 0) + v
    got, last = epochs(sims).get(epoch, [0, 0])
    # Heartbeats keep flowing: over the next watch_s, heartbeats reach the agents and no agent
    # welcomed in this epoch times out again.
    # Agents → server: ZMTP heartbeats plus UDP heartbeat datagrams (the default once confirmed).
    def out():
        return Env.total(sims, "hb_out") + Env.total(sims, "udp_out")
    to0, hb0, ho0, t0 = Env.total(sims, "timeouts"), Env.total(sims, "hb_in"), out(), time.time()
    time.sleep(watch_s)
    to1, hb1, ho1, t1 = Env.total(sims, "timeouts"), Env.total(sims, "hb_in"), out(), time.time()
    got_after = epochs(sims).get(epoch, [0])[0]
    return {"t_all": (last - t_start) / 1e6 if got else float("nan"), "left": n - got, "t_start": t_start,
            "hb_rate": (hb1 - hb0) / (t1 - t0), "hb_out_rate": (ho1 - ho0) / (t1 - t0), "timeouts_after": to1 - to0, "left_after": n - got_after,
            "hello_required": Env.total(sims, "hello_required"), "cost": cost}


def cost_text(r):
    c = r["cost"]
    io = sum(v for k, v in c["server"].items() if k.startswith("ZMQbg/IO"))
    main = sum(v for k, v in c["server"].items() if not k.startswith("ZMQbg"))
    return (f"{io:.2f} CPU s in zmq I/O threads, {main:.2f} in its own threads, simulators {c['sims']:.2f}; "
            f"listen-queue overflows {c['net'].get('TcpExtListenOverflows', 0)}, SYN retransmissions "
            f"{c['net'].get('TcpExtTCPSynRetrans', 0)} (system-wide counters)")


def describe(label, r, welcomes_s):
    """One line per storm: where the wall time and the CPU went."""
    c = r["cost"]
    srv = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["server"].items(), key=lambda kv: -kv[1]) if v > 0)
    sth = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["sim_threads"].items(), key=lambda kv: -kv[1]) if v > 0)
    hist = {}
    for x in welcomes_s:
        b = int(x * 2) / 2
        hist[b] = hist.get(b, 0) + 1
    print(f"[{label}] storm {c['wall_s']:.2f} s wall; server CPU s by thread: {srv or '-'}; simulators CPU s: {c['sims']:.2f} "
          f"({sth}); agents: {c['agents']}; TCP counters: {c['net']}")
    print(f"[{label}] welcomes per 0.5 s after the restart: " + ", ".join(f"{k:.1f}:{v}" for k, v in sorted(hist.items())))


def per_agent(sims, epoch, t_start):
    us = welcomes(sims, epoch)
    xs = [(u - t_start) / 1e6 for u in us]
    return len(xs), pct(xs, 50), pct(xs, 99), xs


def run(args):
    n, procs = args.agents, args.procs
    env = Env(args, "storm")
    try:
        kdir = os.path.join(env.work, "keys")
        os.makedirs(kdir)
        c_key, c_pub, c_pub_z85 = keygen(env, env.coord_bin, os.path.join(kdir, "coordinator"))
        a_key, a_pub, _ = keygen(env, env.cli, os.path.join(kdir, "admin"))
        env.coord_security = ["--server-key", c_key, "--admin-key", f"bench={a_pub}"]
        env.op_security = ["--key", a_key, "--coordinator-key", c_pub]
        curve = ["--server-public-key", c_pub_z85, "--curve-seed", SEED] + SIM_EXTRA
        watch_s = 5.0

        def measure(kind_curve, tag):
            """One storm against the floor and one against the coordinator, with one kind of simulated agent."""
            # ---- baseline: the bare CURVE ROUTER (floor), same agents, same kill and restart.
            floors = []

            def start_floor(epoch):
                f = Proc([env.sim, "floor", "--bind", f"tcp://127.0.0.1:{env.agent_port}", "--hosts", str(n + 1),
                          "--timeout-s", "600", "--epoch", str(epoch), "--server-secret-key", secret_z85(c_key)] + FLOOR_EXTRA,
                         os.path.join(env.work, f"floor-{tag}-{epoch}.log"))
                env.procs.append(f)
                floors.append(f)
                wait_until(lambda: f.event("bound") or f.p.poll() is not None, 20, what="floor bound")
                return f

            # The first connection of every agent is not what is measured: open them at a rate the
            # CURVE handshakes keep up with on a shared 2-CPU machine (--storm-connect-per-s, all
            # simulators together), so the figures start from a fleet that is all connected.
            args.connect_per_ms = args.storm_connect_per_s / 1000.0 / procs
            start_floor(1)
            fsims = env.start_sims(n, procs, kind_curve, prefix="sim-")
            wait_until(lambda: epochs(fsims).get(1, [0])[0] >= n, 180, 0.2, "agents greeted by the floor")
            time.sleep(3.0)
            perf_dir = env.work if args.perf else None
            fl = storm(env, fsims, n, lambda: floors[-1].stop(signal.SIGKILL), lambda: start_floor(2), 2, args.down_s, watch_s,
                       server_pid=lambda: floors[-1].p.pid, perf_dir=perf_dir, label=f"floor-{tag}")
            for p in fsims + floors:
                p.stop()
                env.procs.remove(p)
            fl_cnt, fl50, fl99, fl_xs = per_agent(fsims, 2, fl["t_start"])
            describe(f"floor, {tag} agents", fl, fl_xs)

            # ---- Gantry: secure coordinator; enroll every simulated agent's key in one request.
            # A fresh state dir per kind: the epochs start from 1 again (welcomes are counted per epoch).
            env.coord_state = os.path.join(env.work, f"coordinator-{tag}")
            os.makedirs(env.coord_state, exist_ok=True)
            env.start_coordinator(hb_ms=1000, log_name=f"coordinator-{tag}.log", extra=COORD_EXTRA)
            keyfile = os.path.join(kdir, "agents.txt")
            with open(keyfile, "w") as f:
                subprocess.run([env.sim, "keys", "--curve-seed", SEED, "--prefix", "sim-", "--count", str(n)], stdout=f,
                               check=True, timeout=120)
            t0 = time.time()
            r = subprocess.run([env.cli, "--coordinator", f"tcp://127.0.0.1:{env.op_port}", "--timeout-ms", "60000"]
                               + env.op_security + ["keys", "accept-file", keyfile], capture_output=True, text=True, timeout=120)
            enroll_s = time.time() - t0
            if r.returncode != 0:
                raise RuntimeError("keys accept-file failed: " + r.stdout + r.stderr)
            print(f"enrolled: {r.stdout.strip()} in {enroll_s:.2f} s")
            sims = env.start_sims(n, procs, kind_curve, prefix="sim-")
            wait_until(lambda: epochs(sims).get(1, [0])[0] >= n, 180, 0.2, "agents welcomed by the coordinator")
            time.sleep(3.0)
            restarted = {}

            def restart():
                env.start_coordinator(hb_ms=1000, log_name=f"coordinator-{tag}-2.log", extra=COORD_EXTRA)
                restarted["ready_us"] = env.coord_ready_us
            g = storm(env, sims, n, lambda: env.stop_coordinator(signal.SIGKILL), restart, 2, args.down_s, watch_s,
                      server_pid=lambda: env.coord_pid, perf_dir=perf_dir, label=f"gantry-{tag}")
            for p in sims:
                p.stop()
                env.procs.remove(p)
            g_cnt, g50, g99, g_xs = per_agent(sims, 2, g["t_start"])
            describe(f"gantry, {tag} agents", g, g_xs)
            if perf_dir:
                print(f"perf data: {perf_dir}/perf-{{floor,gantry}}-{tag}-{{server,sim0}}.data (perf report -i ...)")
            # The raw CURVE clients' protocol errors (a smoke run fails on any).
            malformed = sum(((x.latest() or {}).get("raw_dealer") or {}).get("malformed", 0) for x in fsims + sims)
            refused = expired = 0
            with open(env.coord_log) as f:  # the restarted coordinator's log
                for line in f:
                    refused += "refused" in line
                    expired += " is unknown" in line
            env.stop_coordinator()
            return {"fl": fl, "g": g, "fl50": fl50, "fl99": fl99, "g50": g50, "g99": g99, "g_cnt": g_cnt,
                    "fl_cnt": fl_cnt, "enroll_s": enroll_s, "restarted": restarted, "refused": refused, "expired": expired,
                    "malformed": malformed}

        # Two kinds of simulated agent (--storm-agents): the raw CURVE client (bench/zmtp_curve_dealer.h,
        # the figure: the agents' half of each handshake costs what its cryptography costs) and a
        # libzmq DEALER per agent (as the real agent; its half costs more CPU than the server's).
        kinds = {"raw": (curve + ["--raw-dealer"], "raw ZMTP + CURVE client per agent"),
                 "libzmq": (curve, "libzmq DEALER per agent")}
        order = ["raw", "libzmq"] if args.storm_agents == "both" else [args.storm_agents]
        res = {}
        for tag in order:
            res[tag] = measure(kinds[tag][0], tag)
        m = res[order[0]]
        fl, g = m["fl"], m["g"]
        ratio = g["t_all"] / fl["t_all"]
        # The target is a ratio to the bare CURVE ROUTER on the same libzmq and libsodium, same run.
        ok_all = ratio <= 1.2 and g["left"] == 0
        what = kinds[order[0]][1]
        rows = [(f"all {n} agents reconnected, authenticated (CURVE) + hello → welcome (s); {what}", f"{g['t_all']:.2f}",
                 f"{fl['t_all']:.2f}", f"{ratio:.2f}x", "≤ 1.2x, none left", ok_all),
                ("per-agent restart → welcome, p50 (s)", f"{m['g50']:.2f}", f"{m['fl50']:.2f}", f"{m['g50'] / m['fl50']:.2f}x", "—", None),
                ("per-agent restart → welcome, p99 (s)", f"{m['g99']:.2f}", f"{m['fl99']:.2f}", f"{m['g99'] / m['fl99']:.2f}x", "—", None),
                ("agents left behind (not welcomed within 60 s)", str(g["left"]), str(fl["left"]), "—", "0", g["left"] == 0)]
        for tag in order[1:]:
            o = res[tag]
            rows.append((f"… the same storm, {kinds[tag][1]} (s)", f"{o['g']['t_all']:.2f}", f"{o['fl']['t_all']:.2f}",
                         f"{o['g']['t_all'] / o['fl']['t_all']:.2f}x", "—", None))
            rows.append(("… its agents left behind", str(o["g"]["left"]), str(o["fl"]["left"]), "—", "0", o["g"]["left"] == 0))
        rows += [(f"heartbeats per s in the {watch_s:.0f} s after the last welcome: agents → server (ZMTP + UDP datagrams)", f"{g['hb_out_rate']:.0f}",
                  f"{fl['hb_out_rate']:.0f}", "—", "—", None),
                 ("… server → agents (sent only to agents that heard nothing for their period)", f"{g['hb_rate']:.0f}",
                  f"{fl['hb_rate']:.0f}", "—", "—", None),
                 ("hosts the restarted coordinator expired (`is unknown`)", str(sum(r["expired"] for r in res.values())), "—", "—", "0",
                  all(r["expired"] == 0 for r in res.values())),
                 ("welcomed agents timing out again in those s", str(g["timeouts_after"]), str(fl["timeouts_after"]), "—", "0",
                  all(r["g"]["timeouts_after"] == 0 for r in res.values())),
                 ("coordinator exec → endpoints bound (s)", f"{(m['restarted']['ready_us'] - g['t_start']) / 1e6:.2f}", "—", "—", "—", None),
                 (f"enrolling {n} agent keys (`gantry keys accept-file`, s)", f"{m['enroll_s']:.2f}", "—", "—", "—", None)]
        costs = "; ".join(f"{kinds[t][1]}: coordinator {cost_text(res[t]['g'])}; floor {cost_text(res[t]['fl'])}" for t in order)
        record("storm", "4. Reconnect storm after a coordinator restart (SIGKILL, restart; CURVE)", "bench/run storm", rows,
               f"Secure coordinator (`--server-key`, ZAP allowlist); each of the {n} simulated agents has its own CURVE key pair "
               f"(`gantry-fleet-sim agents --curve-seed`), all enrolled before the run with one `gantry keys accept-file` "
               f"(op `keys.accept_many`). All {n} welcomed, {3} s settled, SIGKILL, down {args.down_s} s, restart on the same "
               "state dir; times from the restart's exec to each agent's first Welcome of the new epoch "
               f"({m['g_cnt']} / {m['fl_cnt']} per-agent samples). Simulated agents: {' and '.join(kinds[t][1] for t in order)} "
               "(`gantry-fleet-sim agents --raw-dealer`: the same CurveZMQ handshake and bytes, bench/zmtp_curve_dealer.h, "
               "so the agents' half costs the 2 shared CPUs what its cryptography costs, as when it runs on 10,000 other hosts; "
               "a libzmq DEALER, as the real agent, costs more CPU than the coordinator's half). Each kind is measured "
               "against its own floor run and a coordinator started fresh on the same state. Agents reconnect with "
               "libzmq's reconnect rule (100 ms doubling to 5 s, jittered) and, after 3 silent heartbeat intervals "
               "(longer for connections that never heard a frame: common/transport/liveness.h), by recreating the "
               "connection after a jittered backoff (100 ms → 5 s, ×0.8–1.2), as the real agent; a connection that drops "
               "queues a Hello at once (sent when reconnected). Baseline: `gantry-fleet-sim floor --server-secret-key` "
               "(bare CURVE ROUTER, allow-all ZAP handler in its loop, welcome + heartbeats, no allowlist, no store, as many "
               "zmq I/O threads as the coordinator's default), killed and restarted the same way with the same agents. "
               f"Refusals logged by the coordinator: {sum(r['refused'] for r in res.values())}. Cost of the storm (restart → "
               f"last welcome): {costs}.")
        # Agents left behind or a protocol error fail the run (bench_storm_smoke relies on it).
        bad = [f"{t}: {r['g']['left']} left by the coordinator, {r['fl']['left']} by the floor, {r['malformed']} malformed"
               for t, r in res.items() if r["g"]["left"] or r["fl"]["left"] or r["malformed"]]
        if bad:
            print("FAILED: " + "; ".join(bad))
            return 1
        return 0
    finally:
        env.close()
