"""Figure 1: a rollback reaching 10,000 connected agents, vs a plain TCP writer loop sending the
same bytes to 10,000 sockets in the same run.

Gantry: the real path. An operator `rollback` request on the operator socket -> the coordinator
applies EvRollback to the active rollout, persists the step, sends the rollback orders of the
hosts in flight and publishes the Signal on its PUB socket -> every agent's SUB has it. Time =
request sent -> the last of the N subscribers received the Signal (p50 / p99 over --runs).

Every one of the N simulated agents has a SUB on the coordinator's PUB. As many of them as the
descriptor limit allows also have their DEALER (hello, 1 s heartbeats, orders): the coordinator
needs one descriptor per connection, so N SUBs plus D DEALERs must fit its hard RLIMIT_NOFILE
(20,000 here: D = 9,400 of 10,000). The rollout that is rolled back has its first batch of 100
hosts ordered and in flight (the simulator holds the updates until the signal cancels them).

Baseline: `gantry-fleet-sim tcp-fan`, one thread writing the encoded rollback Signal plus an
8-byte header to N accepted TCP sockets in a loop; `tcp-recv` processes record when each socket
has the bytes. Time = first write -> the last receiver has them. Also in the same run, to tell the
transport from the coordinator: `gantry-fleet-sim pub-fan`, a bare zmq PUB publishing the same
Signal to N simulated SUB listeners, and the coordinator's own split (its log line of the
persisted rollback step, written just before it publishes, -> the last receipt).

Receivers: `tcp-recv` reads plain sockets in one epoll loop, one read per message. The headline
Gantry and bare-PUB figures use the same kind of receiver: `agents --raw-sub`, a raw ZMTP 3.0
subscriber on a plain socket (bench/zmtp_sub.h), so the receiving side costs what tcp-recv's
does. The same figures with libzmq SUB sockets in the simulator (I/O thread, pipe, mailbox,
ZMQ_FD wakeup, recv: 2-3x the receive CPU, on the same 2 CPUs as the publisher measured) are
reported as second rows. GANTRY_BENCH_BROADCAST_SUBS picks the kinds (default "raw,zmq"; the
first one is the headline)."""

import datetime
import os
import re
import resource
import signal
import subprocess
import time

from bench import Env, Proc, pct, record, rollout_reports, wait_rollout_end, wait_until

# Extra coordinator options, to compare settings in one build (e.g. "--io-threads 1").
COORD_EXTRA = os.environ.get("GANTRY_BENCH_COORD_ARGS", "").split()


def signal_counts(sims, rid):
    sig = [((s.latest() or {}).get("signals") or {}).get(str(rid)) for s in sims]
    cnt = sum(x["count"] for x in sig if x)
    last = max((x["last_us"] for x in sig if x), default=0)
    return cnt, last


# Receiver kinds, headline first: "raw" (agents --raw-sub) and/or "zmq" (libzmq SUB).
SUB_KINDS = [k for k in os.environ.get("GANTRY_BENCH_BROADCAST_SUBS", "raw,zmq").split(",") if k]
KIND_FLAGS = {"raw": ["--raw-sub"], "zmq": []}
KIND_NAME = {"raw": "raw ZMTP receivers (as tcp-recv)", "zmq": "libzmq SUB receivers"}


def run(args):
    n, procs, runs = args.agents, args.procs, args.runs
    for k in SUB_KINDS:
        if k not in KIND_FLAGS:
            raise RuntimeError(f"GANTRY_BENCH_BROADCAST_SUBS: unknown receiver kind {k!r} (raw, zmq)")
    env = Env(args, "broadcast")
    try:
        # ---- baseline: plain TCP writer loop, same number of sockets, same bytes.
        fan = Proc([env.sim, "tcp-fan", "--conns", str(n), "--runs", str(runs), "--gap-ms", "300"],
                   os.path.join(env.work, "fan.log"))
        env.procs.append(fan)
        port = wait_until(lambda: fan.event("bound"), 10, what="tcp-fan")[0]["port"]
        per = (n + procs - 1) // procs
        recvs = []
        for k in range(procs):
            cnt = min(per, n - k * per)
            if cnt <= 0:
                break
            p = Proc([env.sim, "tcp-recv", "--connect", f"127.0.0.1:{port}", "--conns", str(cnt), "--duration-s", "300"],
                     os.path.join(env.work, f"recv-{k}.log"))
            recvs.append(p)
            env.procs.append(p)
        wait_until(lambda: len(fan.event("fan")) >= runs, 300, 0.2, "tcp-fan runs")
        time.sleep(0.5)
        tcp, tcp_write = [], []
        for ev in fan.event("fan"):
            r = str(ev["run"])
            lasts = [(p.latest() or {}).get("runs", {}).get(r, {}) for p in recvs]
            if sum(x.get("count", 0) for x in lasts) == n:
                tcp.append((max(x["last_us"] for x in lasts) - ev["t0_us"]) / 1000.0)
                tcp_write.append((ev["t_written_us"] - ev["t0_us"]) / 1000.0)
        for p in recvs + [fan]:
            p.stop()
            env.procs.remove(p)
        if not tcp:
            raise RuntimeError("no complete TCP baseline runs")
        b50, b99 = pct(tcp, 50), pct(tcp, 99)

        # ---- the transport alone: a bare zmq PUB publishing the same Signal to N simulated SUB
        # listeners (the same SUB code and options as the agents below), per receiver kind.
        zpub = {}
        for kind in SUB_KINDS:
            pf = Proc([env.sim, "pub-fan", "--bind", f"tcp://127.0.0.1:{env.pub_port}", "--runs", str(runs), "--gap-ms", "300",
                       "--wait-ms", "8000"], os.path.join(env.work, f"pub-fan-{kind}.log"))
            env.procs.append(pf)
            wait_until(lambda: pf.event("bound"), 10, what="pub-fan")
            psubs = env.start_sims(n, procs, ["--no-dealer", "--pub-endpoint", f"tcp://127.0.0.1:{env.pub_port}"] + KIND_FLAGS[kind],
                                   endpoint=False, prefix=f"psub{kind}-")
            wait_until(lambda: len(pf.event("fan")) >= runs, 120, 0.2, "pub-fan runs")
            time.sleep(0.5)
            zpub[kind] = []
            for ev in pf.event("fan"):
                cnt, last = signal_counts(psubs, ev["id"])
                if cnt >= n:
                    zpub[kind].append((last - ev["t0_us"]) / 1000.0)
            for p in psubs + [pf]:
                p.stop()
                env.procs.remove(p)
            if not zpub[kind]:
                raise RuntimeError(f"bare PUB: no run reached all {n} {kind} receivers")

        # ---- Gantry, per receiver kind: a fresh coordinator (own state dir and log) each time.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        dealers_n = max(100, min(n, hard - n - 600))  # 600: the coordinator's own files, sockets, slack
        batch = min(100, dealers_n)
        res = {}
        for ki, kind in enumerate(SUB_KINDS):
            res[kind] = gantry_runs(env, args, kind, dealers_n, batch, perf=args.perf and ki == 0)

        head = SUB_KINDS[0]
        print("TCP loop runs (ms, sorted):", " ".join(f"{x:.0f}" for x in sorted(tcp)))
        for kind in SUB_KINDS:
            print(f"Gantry runs, {KIND_NAME[kind]} (ms, sorted):", " ".join(f"{x:.0f}" for x in sorted(res[kind]["lat"])))
            print(f"bare PUB runs, {KIND_NAME[kind]} (ms, sorted):", " ".join(f"{x:.0f}" for x in sorted(zpub.get(kind, []))))
        rows = []
        for kind in SUB_KINDS:
            lat = res[kind]["lat"]
            g50, g99 = pct(lat, 50), pct(lat, 99)
            tag = "" if kind == head else f", {KIND_NAME[kind]}"
            rows += [(f"rollback reaching {n} agents{tag}, p50 (ms)", f"{g50:.1f}", f"{b50:.1f}", f"{g50 / b50:.2f}x", "≤ 1.5x",
                      g50 / b50 <= 1.5),
                     (f"rollback reaching {n} agents{tag}, p99 (ms)", f"{g99:.1f}", f"{b99:.1f}", f"{g99 / b99:.2f}x", "≤ 1.5x",
                      g99 / b99 <= 1.5)]
        rows += [("rollback request → operator reply, p50 (ms)", f"{pct(res[head]['replies'], 50):.1f}", "—", "—", "—", None),
                 ("TCP writer loop: the write calls alone, p50 (ms)", "—", f"{pct(tcp_write, 50):.1f}", "—", "—", None)]
        for kind in SUB_KINDS:
            tag = KIND_NAME[kind]
            fan_ms, spread = res[kind]["fan"], res[kind]["spread"]
            if fan_ms:
                rows.append((f"… of which step persisted & logged → last agent has it (PUB fan-out), {tag}, p50 (ms)",
                             f"{pct(fan_ms, 50):.1f}", f"{b50:.1f}", f"{pct(fan_ms, 50) / b50:.2f}x", "—", None))
            if zpub.get(kind):
                rows.append((f"bare zmq PUB, same Signal, {tag}: publish → last has it, p50 / p99 (ms)", "—",
                             f"{pct(zpub[kind], 50):.1f} / {pct(zpub[kind], 99):.1f} ({len(zpub[kind])} runs)",
                             f"{pct(zpub[kind], 50) / b50:.2f}x TCP", "—", None))
            if spread:
                rows.append((f"first → last agent has it, {tag}, p50 (ms)", f"{pct(spread, 50):.1f}", "—", "—", "—", None))
        runs_txt = ", ".join(f"{len(res[k]['lat'])} Gantry runs with {KIND_NAME[k]}" for k in SUB_KINDS)
        record("broadcast", "1. Rollback broadcast to 10,000 connected agents", "bench/run broadcast", rows,
               f"{runs_txt}, {len(tcp)} baseline runs. Gantry: `rollback` request sent on the operator socket → the "
               f"coordinator applies the rollback, persists the step, orders the {batch} in-flight hosts back and publishes the "
               f"Signal on PUB → the last of {n} agents' SUB sockets has it. {dealers_n} of the {n} simulated agents are full "
               f"agents (DEALER with hello, 1 s heartbeats, orders; SUB); {n - dealers_n} are SUB only, because the "
               f"coordinator needs a descriptor per connection and its hard RLIMIT_NOFILE is {hard}. The rollout rolled back "
               f"has its first batch of {batch} hosts ordered and held. Baseline: one thread writing the same Signal bytes "
               "(plus an 8-byte header) to each of N accepted TCP sockets in a loop → the last receiver (`tcp-recv`: plain "
               "sockets, one epoll loop, one read per message) has them. Receivers: the headline rows use the same kind of "
               "receiver for Gantry and the bare PUB, a raw ZMTP 3.0 subscriber on a plain socket in the simulator's epoll "
               "loop (`agents --raw-sub`, bench/zmtp_sub.h; the DEALER stays libzmq); the rows marked \"libzmq SUB "
               "receivers\" use a libzmq SUB per agent in the simulator, whose receive path (I/O thread, pipe, mailbox, "
               "ZMQ_FD wakeup, recv) costs the 2 shared CPUs several times what the baseline's receivers do. "
               "A fresh coordinator for each receiver kind. Plaintext (`--insecure-dev`) on both sides.")
        return 0
    finally:
        env.close()


def gantry_runs(env, args, kind, dealers_n, batch, perf=False):
    """One coordinator, `dealers_n` full agents + SUB-only agents with `kind` receivers: warm-up,
    then args.runs timed rollbacks. Returns the latencies and the coordinator's split."""
    n, procs, runs = args.agents, args.procs, args.runs
    env.coord_state = os.path.join(env.work, f"coordinator-{kind}")
    env.start_coordinator(hb_ms=1000, extra=COORD_EXTRA, log_name=f"coordinator-{kind}.log")
    pub = ["--pub-endpoint", f"tcp://127.0.0.1:{env.pub_port}"] + KIND_FLAGS[kind]
    dprocs = max(1, round(procs * dealers_n / n))
    agents = env.start_sims(dealers_n, dprocs, ["--hold-updates"] + pub, prefix=f"sim{kind}-")
    subs = env.start_sims(n - dealers_n, max(1, procs - dprocs), ["--no-dealer"] + pub, endpoint=False,
                          prefix=f"sub{kind}-") if n > dealers_n else []
    everyone = agents + subs
    env.wait_welcomed(agents, dealers_n, 180)
    env.upload("v1")
    plan = {"batches": [batch, "100%"]}
    spans, starts = [], []

    def one_run(timeout):
        r = env.op("rollout.start", {"service": "web", "version": "v1", "plan": plan})
        assert r["ok"], r
        rid = r["result"]["id"]
        wait_until(lambda: sum((s.latest() or {}).get("held", 0) for s in agents) >= batch, 60, 0.02,
                   f"{batch} orders held")
        rb = env.op("rollback", {"service": "web"})
        assert rb["ok"], rb
        t0 = rb["sent_us"]
        starts.append(t0)
        try:
            wait_until(lambda: signal_counts(everyone, rid)[0] >= n, timeout, 0.02, "the signal at every agent")
            ms = (signal_counts(everyone, rid)[1] - t0) / 1000.0
        except TimeoutError:
            print(f"rollout {rid} ({kind}): only {signal_counts(everyone, rid)[0]}/{n} agents got the signal")
            ms = None
        reply_ms = (rb["recv_us"] - t0) / 1000.0
        cnt, last = signal_counts(everyone, rid)
        first = min((((s.latest() or {}).get("signals") or {}).get(str(rid)) or {}).get("first_us", 1 << 62) for s in everyone)
        spans.append((rid, first, last))
        wait_rollout_end(env, rid, 60)
        # The held orders were cancelled by the signal and reported failed; let the
        # rollback orders' reports settle before the next run.
        time.sleep(0.3)
        return ms, reply_ms

    # Warm-up: PUB drops what a not-yet-connected SUB would have received; wait until a
    # signal reaches every agent (all SUB connections are up) before timing anything.
    for attempt in range(6):
        ms, _ = one_run(5)
        if ms is not None:
            break
        time.sleep(3.0)
    else:
        raise RuntimeError(f"the signal never reached every agent ({kind} receivers)")
    prof = None
    if perf:  # the coordinator during the timed runs; perf report -i WORK/perf.data
        prof = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "499", "-g", "-p", str(env.coord_pid), "-o",
                                 os.path.join(env.work, "perf.data")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lat, replies = [], []
    spans.clear()
    starts.clear()
    for _ in range(runs):
        ms, reply = one_run(20)
        if ms is not None:
            lat.append(ms)
            replies.append(reply)
    if prof:
        prof.send_signal(signal.SIGINT)
        prof.wait(60)
        print("perf data:", os.path.join(env.work, "perf.data"))
    if not lat:
        raise RuntimeError(f"no complete Gantry runs ({kind} receivers)")
    # Where the time goes: the coordinator logs the rollback step right after persisting it
    # and just before publishing (ms resolution); the simulators stamp each receipt.
    published = {}
    pat = re.compile(r"^(\S+) \S+ \[rollout\] rollout (\d+): stopping: rollback requested")
    with open(env.coord_log) as f:
        for line in f:
            m = pat.match(line)
            if m:
                published[int(m.group(2))] = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp() * 1e6
    fan = [(last - published[rid]) / 1000.0 for rid, first, last in spans if rid in published and last]
    spread = [(last - first) / 1000.0 for rid, first, last in spans if last and first < last]
    # Each timed run in order: request → last agent, of which the rollback step logged → last agent.
    print(f"Gantry runs in order, {KIND_NAME[kind]} (ms: total / fan-out):",
          " ".join(f"{(last - t0) / 1000.0:.0f}/{(last - published[rid]) / 1000.0 if rid in published else float('nan'):.0f}"
                   for (rid, first, last), t0 in zip(spans, starts) if last))
    raw = {}
    for s in everyone:
        for key, v in ((s.latest() or {}).get("raw_sub") or {}).items():
            raw[key] = raw.get(key, 0) + v
    if kind == "raw":
        print(f"raw ZMTP receivers: {raw}")
        if raw.get("malformed", 0) or raw.get("multipart_dropped", 0):
            raise RuntimeError(f"raw ZMTP receivers saw malformed input from the coordinator's PUB: {raw}")
    for p in everyone:
        p.stop()
        env.procs.remove(p)
    env.stop_coordinator()
    return {"lat": lat, "replies": replies, "fan": fan, "spread": spread, "raw": raw}
