#!/usr/bin/env python3
"""Gantry benchmarks: each runs the real coordinator against gantry-fleet-sim processes (or
real agents) and a baseline measured in the same run, prints its figures and records them in
docs/BENCHMARKS.md. Run through bench/run NAME; see bench/README.md.

Every loop here is bounded in count and time; every process started is stopped by pid."""

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def now_us():
    return time.time_ns() // 1000


_HANDED_OUT = set()


def free_port():
    """A TCP port free on 127.0.0.1, below the kernel's ephemeral range (which the local ends of
    outgoing connections use: a port taken from it can be taken again before our daemon binds
    it), picked at random so that runs beside the test suite rarely pick the same one, never
    the same twice in one run (tests/support/fleet.cc free_tcp_port does the same)."""
    low = 10000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            high = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        high = 32768
    if high - low < 1000:
        raise RuntimeError("free_port: the ephemeral range starts too low")
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("free_port: no free port below %d in 1000 tries" % high)


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proc:
    """A child whose stdout carries one JSON object per line; keeps the newest stats line."""

    def __init__(self, argv, log_path=None, cwd=None, env=None):
        self.argv = argv
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, cwd=cwd, env=env,
                                  text=True, bufsize=1)
        self.stats = None
        self.events = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                j = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if j.get("ev") == "stats":
                    self.stats = j
                else:
                    self.events.append(j)

    def latest(self):
        with self.lock:
            return self.stats

    def event(self, name):
        with self.lock:
            return [e for e in self.events if e.get("ev") == name]

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.t.join(2)


def wait_until(pred, timeout, step=0.05, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])  # utime + stime


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def scrape_metrics(port):
    """The coordinator's /metrics as {series: value} (series with their labels, as written)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15).read().decode()
    vals = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, v = line.rpartition(" ")
        try:
            vals[name] = float(v)
        except ValueError:
            continue
    return vals


def udp_rejected_text(by_reason):
    """{reason: count} -> "0" or "mac 3, replay 1"."""
    bad = {k: int(v) for k, v in by_reason.items() if v}
    return ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) if bad else "0"


class Env:
    """One benchmark's processes and work dir; cleans everything up."""

    def __init__(self, args, name):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.sim = os.path.join(self.bin, "bench", "gantry-fleet-sim")
        self.coord_bin = os.path.join(self.bin, "coordinator", "gantry-coordinator")
        self.cli = os.path.join(self.bin, "cli", "gantry")
        self.work = tempfile.mkdtemp(prefix=f"gantry-bench-{name}.")
        self.procs = []
        self.coord = None
        self.coord_state = os.path.join(self.work, "coordinator")
        self.agent_port = free_port()
        self.pub_port = free_port()
        self.op_port = free_port()
        # Plaintext unless a benchmark sets these (bench_storm runs secure: CURVE + keys).
        self.coord_security = ["--insecure-dev"]  # or --server-key ... --admin-key ...
        self.op_security = []                     # gantry-fleet-sim op / gantry: --key ... --coordinator-key ...

    def close(self):
        with open(os.path.join(self.work, "sim-stats.json"), "w") as f:
            for p in self.procs:
                f.write(json.dumps({"argv": p.argv, "stats": p.latest()}) + "\n")
        for p in reversed(self.procs):
            try:
                p.stop(timeout=5)
            except Exception:
                pass
        if self.coord:
            self.stop_coordinator()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print(f"(kept {self.work})")

    # ---- coordinator
    def start_coordinator(self, hb_ms=1000, strace_out=None, log_name="coordinator.log", extra=(), http_address=""):
        ep = os.path.join(self.coord_state, "endpoints.json")
        if os.path.exists(ep):
            os.unlink(ep)
        argv = [self.coord_bin, "--state-dir", self.coord_state] + self.coord_security + [
                "--agent-endpoint", f"tcp://127.0.0.1:{self.agent_port}",
                "--pub-endpoint", f"tcp://127.0.0.1:{self.pub_port}",
                "--operator-endpoint", f"tcp://127.0.0.1:{self.op_port}",
                "--http-address", http_address, "--heartbeat-interval-ms", str(hb_ms), "--log-level",
                self.args.coord_log_level] + list(extra)
        if strace_out:
            trace = os.environ.get("GANTRY_BENCH_STRACE", "-c -e trace=fsync,fdatasync").split()
            argv = ["strace", "-f", "--seccomp-bpf"] + trace + ["-o", strace_out] + argv
        self.coord_log = os.path.join(self.work, log_name)
        self.coord_started_us = now_us()
        self.coord = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(self.coord_log, "w"))
        wait_until(lambda: os.path.exists(ep) or self.coord.poll() is not None, 60, what="coordinator endpoints.json")
        if self.coord.poll() is not None:
            raise RuntimeError("coordinator exited:\n" + open(self.coord_log).read()[-3000:])
        self.coord_ready_us = now_us()
        self.coord_pid = self.coord.pid
        if strace_out:  # the coordinator is strace's child
            kids = open(f"/proc/{self.coord.pid}/task/{self.coord.pid}/children").read().split()
            self.coord_pid = int(kids[0])
        return self.coord

    def stop_coordinator(self, sig=signal.SIGTERM):
        if self.coord and self.coord.poll() is None:
            try:  # under strace, signal the coordinator itself so strace writes its summary
                os.kill(self.coord_pid, sig)
            except (ProcessLookupError, AttributeError):
                self.coord.send_signal(sig)
            try:
                self.coord.wait(20)
            except subprocess.TimeoutExpired:
                self.coord.kill()
                self.coord.wait(5)
        self.coord = None

    def op(self, command, args=None, timeout_ms=60000, brief=True, wait_end_after_ms=None):
        """One operator request. wait_end_after_ms (rollout.start): the client then stays quiet that
        long and follows the rollout to its end, which comes back as the reply's "end"."""
        argv = [self.sim, "op", "--endpoint", f"tcp://127.0.0.1:{self.op_port}", "--command", command,
                "--args", json.dumps(args or {}), "--timeout-ms", str(timeout_ms)]
        if brief:
            argv.append("--brief")
        if wait_end_after_ms is not None:
            argv += ["--wait-end-after-ms", str(wait_end_after_ms)]
        argv += self.op_security
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_ms / 1000 + 10).stdout
        for line in out.splitlines():
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"op {command}: no reply: {out}")

    def upload(self, version, size=4096):
        path = os.path.join(self.work, f"web-{version}.tar")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        r = subprocess.run([self.cli, "--coordinator", f"tcp://127.0.0.1:{self.op_port}"] + self.op_security + ["release", "upload", path,
                            "--service", "web", "--version", version], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("upload failed: " + r.stdout + r.stderr)

    # ---- simulators
    def start_sims(self, n, procs, extra=(), endpoint=None, prefix="sim-"):
        sims = []
        per = (n + procs - 1) // procs
        first = 0
        for k in range(procs):
            cnt = min(per, n - first)
            if cnt <= 0:
                break
            argv = [self.sim, "agents", "--agents", str(cnt), "--first", str(first), "--prefix", prefix,
                    "--duration-s", str(self.args.max_s), "--connect-per-ms", str(self.args.connect_per_ms)] + list(extra)
            if endpoint is not False:
                argv += ["--endpoint", endpoint or f"tcp://127.0.0.1:{self.agent_port}"]
            p = Proc(argv, os.path.join(self.work, f"sim-{prefix}{k}.log"))
            sims.append(p)
            self.procs.append(p)
            first += cnt
        return sims

    @staticmethod
    def total(sims, key):
        return sum((s.latest() or {}).get(key, 0) for s in sims)

    @staticmethod
    def epochs(sims):
        """{epoch: [agents whose newest welcome has it, newest welcome time]} over all simulators."""
        agg = {}
        for s in sims:
            for e, v in ((s.latest() or {}).get("epochs") or {}).items():
                a = agg.setdefault(int(e), [0, 0])
                a[0] += v["agents"]
                a[1] = max(a[1], v["last_us"])
        return agg

    def welcomed_now(self, sims):
        ep = self.epochs(sims)
        return ep[max(ep)][0] if ep else 0

    def wait_welcomed(self, sims, n, timeout=120):
        # Counted per coordinator epoch, so a welcome from an earlier peer (the floor) is not counted.
        wait_until(lambda: self.welcomed_now(sims) >= n and self.total(sims, "welcomed") >= n, timeout, 0.2,
                   f"{n} agents welcomed")


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def machine_facts():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return "?"
    lscpu = sh("lscpu | grep -E '^(Model name|CPU\\(s\\)|Thread|Core|Socket|CPU max MHz|Hypervisor)'")
    return {"nproc": sh("nproc"), "lscpu": lscpu, "mem": sh("free -m | sed -n 2p"),
            "kernel": sh("uname -r"), "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


RESULTS = []


def record(name, title, cmd, rows, notes=""):
    """rows: [(figure, gantry, baseline, ratio, target, passed)]"""
    notes = (notes + f" Load average (1 min) when the figures were taken: {loadavg()} on {os.cpu_count()} CPUs"
             " (other work shares this machine).").strip()
    RESULTS.append({"name": name, "title": title, "cmd": cmd, "rows": rows, "notes": notes})
    print(f"\n== {title}")
    for r in rows:
        print("  {:<46} gantry {:<14} baseline {:<14} ratio {:<8} target {:<18} {}".format(*[str(x) for x in r[:5]],
              "PASS" if r[5] else ("MISS" if r[5] is False else "-")))
    if notes:
        print("  " + notes)


def write_markdown(args):
    if args.no_write or not RESULTS:
        return
    path = os.path.join(REPO, "docs", "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Gantry benchmarks\n"
    facts = machine_facts()
    for r in RESULTS:
        block = [f"<!-- bench:{r['name']} -->", f"### {r['title']}", "",
                 f"Measured {facts['date']} on: {facts['nproc']} CPUs; "
                 + "; ".join(re.sub(r"\s+", " ", l.strip()) for l in facts["lscpu"].splitlines()) + f"; memory (MiB) `{facts['mem']}`; "
                 f"kernel {facts['kernel']}.", "", f"Command: `{r['cmd']}`", "",
                 "| figure | Gantry | baseline (same run) | ratio | target | result |", "|---|---|---|---|---|---|"]
        for row in r["rows"]:
            res = "pass" if row[5] else ("**miss**" if row[5] is False else "—")
            block.append("| " + " | ".join(str(x) for x in row[:5]) + f" | {res} |")
        if r["notes"]:
            block += ["", r["notes"]]
        block.append(f"<!-- /bench:{r['name']} -->")
        block = "\n".join(block)
        pat = re.compile(rf"<!-- bench:{re.escape(r['name'])} -->.*?<!-- /bench:{re.escape(r['name'])} -->", re.S)
        if pat.search(text):
            text = pat.sub(lambda _: block, text)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(f"\nwrote {path}")


def wait_rollout_end(env, rid, timeout):
    def done():
        r = env.op("rollout.get", {"id": rid})
        ph = r.get("result", {}).get("phase")
        return r if ph not in ("running", "paused", "rolling_back", None) else None
    return wait_until(done, timeout, 0.05, f"rollout {rid} to end")


def rollout_reports(sims, rid):
    n, last, first = 0, 0, None
    for s in sims:
        ro = (s.latest() or {}).get("rollouts", {}).get(str(rid))
        if ro:
            n += ro["reports"]
            last = max(last, ro["last_report_us"])
            first = ro["first_order_us"] if first is None else min(first, ro["first_order_us"])
    return n, first, last


# ---- benchmarks --------------------------------------------------------------------------------

def bench_smoke(args):
    """200 simulated agents, one short rollout: proves the simulator and the coordinator agree."""
    env = Env(args, "smoke")
    try:
        env.start_coordinator(hb_ms=500)
        sims = env.start_sims(200, 1)
        env.wait_welcomed(sims, 200, 60)
        env.upload("v1")
        r = env.op("rollout.start", {"service": "web", "version": "v1", "plan": {"batches": [50]}})
        assert r["ok"], r
        rid = r["result"]["id"]
        end = wait_rollout_end(env, rid, 60)
        phase = end["result"]["phase"]
        n, _, _ = rollout_reports(sims, rid)
        wait_until(lambda: rollout_reports(sims, rid)[0] >= 200, 10, what="200 reports counted")
        n, _, _ = rollout_reports(sims, rid)
        hosts = env.op("hosts", {}, brief=False)["result"]["hosts"]
        on_v1 = sum(1 for h in hosts for s in h["services"] if s["current_version"] == "v1")
        print(f"smoke: rollout {rid} {phase}; {n} reports; {on_v1}/200 hosts on v1")
        ok = phase == "succeeded" and n == 200 and on_v1 == 200
        if not ok:
            print(open(env.coord_log).read()[-3000:])
        return 0 if ok else 1
    finally:
        env.close()


def bench_rest_smoke(args):
    """The at-rest exchange with UDP heartbeats, against the floor (no coordinator needed): 50
    agents get sessions, are confirmed, then heartbeat with datagrams alone; stopped for longer
    than 2 intervals, they are told udp_lost and are confirmed again when they resume."""
    n, hb_ms = 50, 200
    env = Env(args, "rest-smoke")
    try:
        floor = Proc([env.sim, "floor", "--bind", f"tcp://127.0.0.1:{env.agent_port}", "--hosts", str(n + 1), "--timeout-s", "60",
                      "--heartbeat-interval-ms", str(hb_ms), "--udp-heartbeats", "1", "--stats-ms", "100"],
                     os.path.join(env.work, "floor.log"))
        env.procs.append(floor)
        sims = env.start_sims(n, 1, ["--stats-ms", "100"])
        wait_until(lambda: env.total(sims, "udp_confirmed_now") >= n, 20, 0.1, f"{n} UDP sessions confirmed")
        time.sleep(0.3)  # the reader has the stats lines after the last confirmation
        zmtp0, udp0 = env.total(sims, "hb_out"), env.total(sims, "udp_out")
        time.sleep(5 * hb_ms / 1000.0)
        zmtp1, udp1 = env.total(sims, "hb_out"), env.total(sims, "udp_out")
        # Confirmed agents send datagrams only: ~5 intervals of them, no ZMTP heartbeat.
        at_rest_ok = zmtp1 == zmtp0 and udp1 - udp0 >= 3 * n
        print(f"rest-smoke: {n} confirmed; over 5 intervals {udp1 - udp0} datagrams, {zmtp1 - zmtp0} ZMTP heartbeats")
        os.kill(sims[0].p.pid, signal.SIGSTOP)  # datagrams stop, the connections stay
        time.sleep(5 * hb_ms / 1000.0)
        os.kill(sims[0].p.pid, signal.SIGCONT)
        wait_until(lambda: env.total(sims, "udp_lost") >= n and env.total(sims, "udp_confirms") >= 2 * n, 10, 0.1,
                   "udp_lost, then confirmed again")
        time.sleep(0.3)  # the floor's next stats line
        fl = floor.latest()["udp"]
        print(f"rest-smoke: agents {env.total(sims, 'udp_confirms')} confirmations, {env.total(sims, 'udp_lost')} udp_lost, "
              f"{env.total(sims, 'udp_send_fail')} send failures; floor {fl}")
        ok = (at_rest_ok and fl["lost"] >= n and fl["accepted"] > 0 and not any(fl["rejected"].values())
              and env.total(sims, "udp_send_fail") == 0)
        return 0 if ok else 1
    finally:
        env.close()


def bench_orchestration(args):
    """Figure 2: 10,000 hosts, 100 batches of 100, instant swap, zero soak, vs the floor.
    With --orch-runs N the whole measurement (floor and Gantry, fresh processes) runs N times and
    the run with the median ratio is recorded, with every run's ratio."""
    results = [_orchestration_once(args) for _ in range(max(1, args.orch_runs))]
    results.sort(key=lambda r: r["ratio"])
    med = results[len(results) // 2]
    rows = list(med["rows"])
    if len(results) > 1:
        rows.insert(0, (f"ratio, median of {len(results)} runs (each: its own floor)", f"{med['ratio']:.2f}x",
                        ", ".join(f"{r['ratio']:.2f}x" for r in results), "—", "≤ 3x floor",
                        med["ratio"] <= 3.0 and med["ok"]))
    cmd = "bench/run orchestration" + (f" --orch-runs {args.orch_runs}" if args.orch_runs > 1 else "") + \
        (" --strace" if args.strace else "")
    record("orchestration", "2. Orchestration overhead (10,000 hosts, 100 batches of 100)", cmd, rows,
           med["note"] + (" The rows below the first are those of the median run." if len(results) > 1 else ""))
    return 0


def _orchestration_once(args, extra=()):
    n, batch, procs = args.agents, args.batch, args.procs
    env = Env(args, "orchestration")
    try:
        # Baseline: the bare order-and-acknowledge floor on the same port, same simulators.
        floor_ep = os.path.join(env.work, "floor.ep")
        floor = Proc([env.sim, "floor", "--bind", f"tcp://127.0.0.1:{env.agent_port}", "--hosts", str(n), "--batch",
                      str(batch), "--timeout-s", "300"], os.path.join(env.work, "floor.log"))
        env.procs.append(floor)
        sims = env.start_sims(n, procs)
        wait_until(lambda: floor.event("floor"), 300, 0.2, "the floor run")
        fl = floor.event("floor")[0]
        assert fl["ok"], fl
        floor_cpu = proc_cpu_ticks(floor.p.pid) / os.sysconf("SC_CLK_TCK")
        floor.stop()
        floor_ms = fl["ms"]
        print(f"floor: {n} hosts in {fl['batches']} batches: {floor_ms:.0f} ms")

        # Gantry: the real coordinator on the same port; the simulators reconnect and say hello.
        strace_out = os.path.join(env.work, "strace.txt") if args.strace else None
        env.start_coordinator(hb_ms=1000, extra=extra)
        env.wait_welcomed(sims, n, 120)
        env.upload("v1")
        time.sleep(1.0)
        cpu0 = proc_cpu_ticks(env.coord_pid)
        perf = None
        if args.perf:  # profile the coordinator during the rollout (software clock: works in VMs)
            cg = os.environ.get("GANTRY_BENCH_PERF_CALLGRAPH", "")  # e.g. dwarf,8192 (large files)
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999"] + (["--call-graph", cg] if cg else []) + ["-p", str(env.coord_pid), "-o",
                                     os.path.join(env.work, "perf.data")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        tracer = None
        if strace_out:  # attached only for the rollout: greeting 10,000 agents under strace is too slow
            tracer = subprocess.Popen(["strace", "-f", "-tt", "-y", "-e", "trace=fsync,fdatasync", "-o", strace_out, "-p",
                                       str(env.coord_pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2.0)
        r = env.op("rollout.start", {"service": "web", "version": "v1", "plan": {"batches": [batch]}})
        assert r["ok"], r
        rid, t0 = r["result"]["id"], r["sent_us"]
        # Watch the simulators, not the coordinator: a rollout.get at 10,000 hosts costs it tens of ms.
        wait_until(lambda: rollout_reports(sims, rid)[0] >= n, args.max_s, 0.1, "every host's report")
        end = wait_rollout_end(env, rid, args.max_s)
        cpu1 = proc_cpu_ticks(env.coord_pid)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
            print("perf data:", os.path.join(env.work, "perf.data"))
        res = end["result"]
        print("rollout:", {k: res.get(k) for k in ("phase", "batch", "batches_total", "counts", "end_reason")})
        wait_until(lambda: rollout_reports(sims, rid)[0] >= n, 30, what="all reports counted")
        nrep, first, last = rollout_reports(sims, rid)
        gantry_ms = res["finished_at"] - t0 / 1000.0
        fsyncs = None
        if tracer:
            tracer.send_signal(signal.SIGINT)  # detaches and writes the summary
            tracer.wait(30)
        env.stop_coordinator()
        syncs_by_file = {}
        if strace_out:  # one line per call: fdatasync(5</path/coordinator.db-wal>) = 0
            for m in re.finditer(r"f(?:data)?sync\(\d+<([^>]*)>\)", open(strace_out).read()):
                name = os.path.basename(m.group(1))
                syncs_by_file[name] = syncs_by_file.get(name, 0) + 1
            fsyncs = sum(syncs_by_file.values())
        hz = os.sysconf("SC_CLK_TCK")
        ratio = gantry_ms / floor_ms
        rows = [("rollout wall time, 10k hosts / %d batches (ms)" % res["batches_total"], f"{gantry_ms:.0f}",
                 f"{floor_ms:.0f}", f"{ratio:.2f}x", "≤ 3x floor", ratio <= 3.0 and res["phase"] == "succeeded")]
        if fsyncs is not None:
            # N batches have N + 1 transitions: the start orders batch 1, N - 1 next-batch orders, the end.
            per = fsyncs / (res["batches_total"] + 1)
            rows.append((f"fsync + fdatasync per batch transition ({res['batches_total'] + 1}: start, next batches, end)",
                         f"{per:.2f} ({fsyncs} total)", "—", "—", "≤ 1",
                         per <= 1.0))
            rows.append(("… of which, by file", ", ".join(f"{k}: {v}" for k, v in sorted(syncs_by_file.items())), "—",
                         "—", "—", None))
        rows.append(("CPU seconds (coordinator during the rollout / floor process, whole life)", f"{(cpu1 - cpu0) / hz:.2f}",
                     f"{floor_cpu:.2f}", f"{(cpu1 - cpu0) / hz / max(floor_cpu, 0.01):.1f}x", "—", None))
        return dict(ratio=ratio, ok=res["phase"] == "succeeded", rows=rows, note=
               f"Phase {res['phase']}, {nrep} reports; Gantry time = rollout.start sent → the rollout's own finished_at; "
               f"floor = first order → last report of the last batch on a bare ROUTER (no store, no state machine). "
               f"fsyncs counted with `strace -f -y -e trace=fsync,fdatasync -p COORDINATOR` attached for the rollout only"
               + (" (this timed run was under strace, so its wall time is slower)." if strace_out else
                  " (not counted in this run; `bench/run orchestration --strace` counts them)."))
    finally:
        env.close()


def bench_rest(args):
    """Figure 3: coordinator at rest with 10,000 agents heartbeating at 1 s: by default as UDP
    datagrams once the session is confirmed (the coordinator's, the floor's and the simulators'
    default); with --tcp-heartbeats every heartbeat over the agents' connections."""
    n, procs = args.agents, args.procs
    udp = not args.tcp_heartbeats
    sim_extra = [] if udp else ["--udp-heartbeats", "0"]
    env = Env(args, "rest")
    try:
        hz = os.sysconf("SC_CLK_TCK")
        # Baseline: a bare ROUTER exchanging the same heartbeats with the same agents (the floor
        # waits for one host more than exist, so it only greets and heartbeats).
        # It follows the coordinator's heartbeat rule (tools.cc `floor`): welcome with the same
        # coordinator_heartbeat_ms, a heartbeat to a host only after that long without sending it
        # anything, checked once per 1 s interval.
        floor = Proc([env.sim, "floor", "--bind", f"tcp://127.0.0.1:{env.agent_port}", "--hosts", str(n + 1),
                      "--timeout-s", str(int(args.rest_s) + 200), "--coordinator-heartbeat-ms", str(args.coord_hb_ms),
                      "--udp-heartbeats", "1" if udp else "0"],
                     os.path.join(env.work, "floor.log"))
        env.procs.append(floor)
        fsims = env.start_sims(n, procs, sim_extra, prefix="sim-")
        wait_until(lambda: env.total(fsims, "welcomed") >= n, 120, 0.2, "agents greeted by the floor")
        time.sleep(5.0)
        f0, ft0, fhb0, fin0 = proc_cpu_ticks(floor.p.pid), time.time(), env.total(fsims, "hb_in") + env.total(fsims, "udp_in"), env.total(fsims, "hb_out")
        fu0 = env.total(fsims, "udp_out")
        time.sleep(args.rest_s)
        f1, ft1, fhb1, fin1 = proc_cpu_ticks(floor.p.pid), time.time(), env.total(fsims, "hb_in") + env.total(fsims, "udp_in"), env.total(fsims, "hb_out")
        fu1 = env.total(fsims, "udp_out")
        floor_pct = 100.0 * (f1 - f0) / hz / (ft1 - ft0)
        floor_rss = proc_rss_kib(floor.p.pid)
        floor_hb_rate, floor_in_rate = (fhb1 - fhb0) / (ft1 - ft0), (fin1 - fin0) / (ft1 - ft0)
        floor_udp_rate = (fu1 - fu0) / (ft1 - ft0)
        # Datagrams sent and accepted are compared once the agents have stopped (their last stats
        # line is final): sampled while they run, a count is off by the burst of whoever
        # heartbeats between the two readings.
        for p in fsims:
            p.stop()
            env.procs.remove(p)
        if udp:
            t_stopped = now_us() + 200000  # and the last datagrams drained
            fl = wait_until(lambda: (floor.latest() or {}).get("at_us", 0) > t_stopped and floor.latest(), 10, 0.1,
                            "the floor's stats after the agents stopped")["udp"]
            floor_udp = dict(sent=env.total(fsims, "udp_out"), accepted=fl["accepted"], rejected=fl["rejected"],
                             confirms=env.total(fsims, "udp_confirms"), lost=env.total(fsims, "udp_lost"))
        floor.stop()
        env.procs.remove(floor)
        http_port = free_port()  # UDP: /metrics, for the coordinator's datagram counters
        env.start_coordinator(hb_ms=1000, extra=["--coordinator-heartbeat-ms", str(args.coord_hb_ms)]
                              + ([] if udp else ["--udp-heartbeat", "off"]), http_address=f"127.0.0.1:{http_port}" if udp else "")
        time.sleep(1.0)
        rss0 = proc_rss_kib(env.coord_pid)
        sims = env.start_sims(n, procs, sim_extra)
        env.wait_welcomed(sims, n, 120)
        time.sleep(5.0)  # settle: hellos persisted, first status snapshots built
        c0, t0 = proc_cpu_ticks(env.coord_pid), time.time()
        hb0, in0, u0 = env.total(sims, "hb_in") + env.total(sims, "udp_in"), env.total(sims, "hb_out"), env.total(sims, "udp_out")
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384", "-p",
                                     str(env.coord_pid), "-o", os.path.join(env.work, "perf.data")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.rest_s)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        c1, t1 = proc_cpu_ticks(env.coord_pid), time.time()
        hb1, in1, u1 = env.total(sims, "hb_in") + env.total(sims, "udp_in"), env.total(sims, "hb_out"), env.total(sims, "udp_out")
        in_rate, udp_rate = (in1 - in0) / (t1 - t0), (u1 - u0) / (t1 - t0)
        cpu_pct = 100.0 * (c1 - c0) / hz / (t1 - t0)
        rss1 = proc_rss_kib(env.coord_pid)
        per_agent = (rss1 - rss0) / n
        hb_rate = (hb1 - hb0) / (t1 - t0)
        # A dead agent: one simulated agent stops without a word; when does the coordinator notice?
        os.kill(sims[0].p.pid, signal.SIGUSR1)
        killed = wait_until(lambda: sims[0].event("killed"), 10, what="kill event")[0]
        host = killed["host"]
        pat = re.compile(r"^(\S+) \S+ \[coordinator\] " + re.escape(host) + " is unknown")

        def noticed():
            with open(env.coord_log) as f:
                for line in f:
                    m = pat.match(line)
                    if m:
                        return m.group(1)
            return None
        ts = wait_until(noticed, 15, 0.1, f"{host} to be noticed")
        t_noticed = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        since_last = t_noticed - killed["last_sent_us"] / 1e6
        since_death = t_noticed - killed["at_us"] / 1e6
        # The coordinator's datagram counters, read once, now, after the agents stopped (as for the
        # floor): its first /metrics request builds a status snapshot, and for a minute after any
        # request it rebuilds one every 5 s (~100 ms of its loop at 10,000 hosts), which must not
        # fall into the CPU window or the detection above.
        if udp:
            for p in sims:
                p.stop()
            time.sleep(0.2)  # the last datagrams drained
            metrics = scrape_metrics(http_port)
            gantry_udp = dict(sent=env.total(sims, "udp_out"), accepted=metrics.get("gantry_udp_heartbeats_total", 0),
                              rejected={m.group(1): v for k, v in metrics.items()
                                        if (m := re.match(r'gantry_udp_heartbeats_rejected_total\{reason="([^"]+)"\}', k))},
                              confirms=env.total(sims, "udp_confirms"), lost=env.total(sims, "udp_lost"))
        rows = [("coordinator CPU at rest, %d agents, 1 s heartbeats" % n, f"{cpu_pct:.2f}% of a core",
                 f"{floor_pct:.2f}% (bare ROUTER, same exchange)", f"{cpu_pct / max(floor_pct, 0.01):.2f}x", "≤ 5%",
                 cpu_pct <= 5.0),
                ("RSS of the bare ROUTER with the same connections (KiB per agent)", f"{per_agent:.1f}",
                 f"{floor_rss / n:.1f}", "—", "—", None),
                ("coordinator RSS per agent (KiB), delta over empty", f"{per_agent:.1f}", f"{rss0} KiB empty", "—",
                 "≤ 30 KiB", per_agent <= 30.0),
                ("coordinator RSS total (MiB)", f"{rss1 / 1024:.0f}", "—", "—", "—", None),
                ("ZMTP heartbeats the agents send per s (arriving over the connections)", f"{in_rate:.0f}",
                 f"{floor_in_rate:.0f}", "—", "—", None)]
        if udp:
            def share(u):
                return u["accepted"] / max(u["sent"], 1)
            rows += [("UDP heartbeat datagrams the agents send per s", f"{udp_rate:.0f}", f"{floor_udp_rate:.0f}", "—", "—", None),
                     ("… received (accepted) per s: that × the accepted share below", f"{udp_rate * share(gantry_udp):.0f}",
                      f"{floor_udp_rate * share(floor_udp):.0f}", "—", "—", None),
                     ("UDP heartbeat datagrams accepted / sent (whole run)",
                      "%d / %d (%.2f%%)" % (gantry_udp["accepted"], gantry_udp["sent"], 100.0 * share(gantry_udp)),
                      "%d / %d (%.2f%%)" % (floor_udp["accepted"], floor_udp["sent"], 100.0 * share(floor_udp)), "—", "—", None),
                     ("UDP heartbeat datagrams rejected by the server (by reason, whole run)",
                      udp_rejected_text(gantry_udp["rejected"]), udp_rejected_text(floor_udp["rejected"]), "—", "0",
                      not any(gantry_udp["rejected"].values()) and not any(floor_udp["rejected"].values())),
                     ("UDP sessions confirmed / declared lost (agents' count, whole run)",
                      "%d / %d" % (gantry_udp["confirms"], gantry_udp["lost"]),
                      "%d / %d" % (floor_udp["confirms"], floor_udp["lost"]), "—", "—", None)]
        rows += [("heartbeats reaching the agents per s, over the connections or as datagrams (coordinator heartbeat period %g s)" % (args.coord_hb_ms / 1000.0),
                 f"{hb_rate:.0f}", f"{floor_hb_rate:.0f}", f"{hb_rate / max(floor_hb_rate, 1):.2f}", "—", None),
                ("dead agent noticed after it died (s)", f"{since_death:.3f}", "1 s interval", f"{since_death:.3f} intervals",
                 "≤ 3 intervals", since_death <= 3.0),
                ("… after its last message (s; the timeout is 3 intervals of silence)", f"{since_last:.3f}", "—", "—", "—", None)]
        how = ("Heartbeats: UDP datagrams once confirmed (the default of the coordinator, the floor and the simulators: "
               "each agent sends a datagram and a ZMTP heartbeat until the server confirms its session on the connection, "
               "then the datagram alone). Datagrams accepted / sent: the server's counter (the coordinator's /metrics, read "
               "once after the CPU window and the dead-agent test, as reading it starts its snapshot rebuilds; the floor's "
               "stats line) against the agents' final counts, both taken after the agents stopped. " if udp else
               "Heartbeats: every one over the agents' connections (`--tcp-heartbeats`: coordinator `--udp-heartbeat off`, "
               "floor and simulators `--udp-heartbeats 0`). ")
        record("rest" if udp else "rest-tcp",
               "3. Coordinator at rest (10,000 agents heartbeating at 1 s" + ("" if udp else ", heartbeats over TCP") + ")",
               "bench/run rest" + ("" if udp else " --tcp-heartbeats"), rows, how +
               f"CPU from /proc/PID/stat utime+stime over {args.rest_s:.0f} s after all {n} agents were welcomed and 5 s of settling; "
               "RSS from VmRSS at the end of that window: a mid-life figure, not the steady state, which libzmq reaches only after 512 messages per pipe direction (see Status below). Coordinator run with `--coordinator-heartbeat-ms "
               f"{args.coord_hb_ms}`. Baseline: `gantry-fleet-sim floor`, one ROUTER with the coordinator's socket options "
               "and no store, that answers each hello with a Welcome carrying the same coordinator_heartbeat_ms"
               + (" and a UDP heartbeat session, checks each datagram as the coordinator does (size, magic, session, "
                  "BLAKE2b MAC, sequence) from a recvmmsg socket in the same poll loop, confirms sessions and declares "
                  "silent ones lost," if udp else ",") +
               " decodes every agent message, and once per 1 s interval sends a Heartbeat to each host it sent nothing to "
               "for that period — the coordinator's exchange, nothing else. Detection time from the coordinator's log line "
               "`<host> is unknown`.")
        return 0
    finally:
        env.close()


def bench_broadcast(args):
    import bench_broadcast  # figure 1, its own module
    return bench_broadcast.run(args)


def bench_storm(args):
    import bench_storm  # figure 4, its own module
    return bench_storm.run(args)


def bench_distribution(args):
    import bench_distribution  # figure 6, its own module
    return bench_distribution.run(args)


def bench_ansible(args):
    import bench_ansible  # figure 7, its own module
    return bench_ansible.run(args)


def bench_status_page(args):
    import bench_status_page  # issue 24: the status page's cost at 10,000 hosts, its own module
    return bench_status_page.run(args)


def bench_footprint(args):
    import bench_footprint  # figure 5, its own module
    return bench_footprint.run(args)


BENCHES = {"smoke": bench_smoke, "rest-smoke": bench_rest_smoke, "orchestration": bench_orchestration, "rest": bench_rest, "broadcast": bench_broadcast,
           "storm": bench_storm, "distribution": bench_distribution,
           "ansible": bench_ansible, "footprint": bench_footprint, "status-page": bench_status_page,
           "ha-orchestration": lambda a: _ha().bench_ha_orchestration(a), "failover": lambda a: _ha().bench_failover(a)}


def _ha():
    import bench_ha
    return bench_ha


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("name", choices=list(BENCHES) + ["all"])
    ap.add_argument("--bin", default=os.path.join(REPO, "build-bench"), help="CMake build dir")
    ap.add_argument("--agents", type=int, default=10000)
    ap.add_argument("--procs", type=int, default=8, help="simulator processes")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--runs", type=int, default=20, help="broadcast: rounds")
    ap.add_argument("--orch-runs", type=int, default=1, help="orchestration: whole runs, the median is recorded")
    ap.add_argument("--rest-s", type=float, default=20.0)
    ap.add_argument("--coord-hb-ms", type=int, default=10000, help="rest: --coordinator-heartbeat-ms (0: every interval)")
    ap.add_argument("--tcp-heartbeats", action="store_true",
                    help="rest: every heartbeat over the agents' connections (no UDP heartbeats), recorded as rest-tcp")
    ap.add_argument("--down-s", type=float, default=1.0)
    ap.add_argument("--storm-connect-per-s", type=float, default=1000, help="storm: first connections per s, all simulators")
    ap.add_argument("--storm-agents", choices=["both", "raw", "libzmq"], default="both",
                    help="storm: simulated agents as raw ZMTP + CURVE clients (the figure), libzmq DEALERs, or both")
    ap.add_argument("--max-s", type=int, default=900, help="upper bound on any simulator's life")
    ap.add_argument("--strace", action="store_true", help="orchestration: count fsyncs under strace")
    ap.add_argument("--connect-per-ms", type=float, default=2, help="agents each simulator opens per ms at start")
    ap.add_argument("--perf", action="store_true", help="orchestration: perf record the coordinator during the rollout")
    ap.add_argument("--coord-log-level", default="info")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    ap.add_argument("--receivers", type=int, default=100, help="distribution: agents receiving the release")
    ap.add_argument("--release-mib", type=int, default=50, help="distribution: release size")
    ap.add_argument("--rounds", type=int, default=3, help="ansible: measured rounds (median reported)")
    ap.add_argument("--idle-s", type=float, default=30.0, help="footprint: idle CPU measurement window")
    ap.add_argument("--settle-s", type=float, default=5.0, help="footprint: settling after the welcome")
    ap.add_argument("--page-window-s", type=float, default=15.0, help="status-page: each measured window")
    ap.add_argument("--ha-runs", type=int, default=3, help="ha-orchestration: SQLite/etcd pairs run (medians compared)")
    ap.add_argument("--failover-runs", type=int, default=5, help="failover: leader kills measured")
    ap.add_argument("--lease-ttl", type=int, default=5, help="failover: the coordinators' --lease-ttl")
    args = ap.parse_args()
    sys.modules.setdefault("bench", sys.modules[__name__])  # benchmark modules import this one as `bench`
    raise_nofile()
    names = ["orchestration", "rest", "broadcast", "storm"] if args.name == "all" else [args.name]
    rc = 0
    for nm in names:
        rc |= BENCHES[nm](args) or 0
    if not args.name.endswith("smoke"):
        write_markdown(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
