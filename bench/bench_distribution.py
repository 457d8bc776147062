"""Figure 6: a 50 MiB release delivered to 100 real gantry-agent processes on loopback, vs a
plain TCP copy of the same bytes to the same number of receivers in the same run; and the
coordinator's memory while it serves them (10 receivers, then 100).

Gantry: the real coordinator (--insecure-dev) and N real agents, each with its own state dir
and install root (service `web`, driver binary, restart command /bin/true, no probes). The
release is a ustar archive holding release.conf and a file of random bytes. One rollout to all
hosts in one batch; time = rollout.start sent -> the last agent's log line `download of <sha>
complete` (the last byte written and fsynced, and its sha256 — computed while writing — checked;
extraction and restart come after and are not in the figure). Baseline: `gantry-fleet-sim copy-send` serves the same archive to N
`copy-recv` processes at once (one thread, epoll, sendfile; each receiver writes its own file
and fsyncs it), time = first byte offered -> the last receiver's fsync; run before and after
the Gantry rounds (other work on the machine comes and goes), the faster run counts. The CPU
seconds of both sides are printed (Gantry: coordinator and agents from /proc; baseline: the
copy processes' rusage). With --perf, the first baseline run and the main Gantry round are
each profiled system-wide (perf-baseline.data, perf-gantry.data in the work dir; use --keep)."""

import datetime
import os
import random
import re
import signal
import subprocess
import tarfile
import threading
import time

from bench import Env, Proc, loadavg, proc_cpu_ticks, record, wait_rollout_end, wait_until

MiB = 1024 * 1024


def make_release(path, version, payload_bytes, seed):
    """A release archive whose content is incompressible random bytes."""
    rnd = random.Random(seed)
    tmp = path + ".payload"
    with open(tmp, "wb") as f:
        left = payload_bytes
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(rnd.randbytes(n))
            left -= n
    conf = path + ".conf"
    with open(conf, "w") as f:
        f.write(f"version={version}\n")
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        t.add(conf, arcname="release.conf")
        t.add(tmp, arcname="payload.bin")
    os.unlink(tmp)
    os.unlink(conf)
    return os.path.getsize(path)


class RssSampler:
    """Samples a process's VmRSS/VmHWM every `period` s in a thread; keeps the peak RSS seen."""

    def __init__(self, pid, period=0.02):
        self.pid, self.period = pid, period
        self.peak = 0
        self.hwm = 0
        self.samples = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def read(self):
        rss = hwm = 0
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return rss, hwm

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                rss, hwm = self.read()
            except OSError:
                return
            self.peak = max(self.peak, rss)
            self.hwm = max(self.hwm, hwm)
            self.samples += 1
            self.stop_ev.wait(self.period)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.join(2)


class Agents:
    """Real gantry-agent processes, one work dir each; stopped together (SIGTERM, then SIGKILL)."""

    def __init__(self, env):
        self.env = env
        self.bin = os.path.join(env.bin, "agent", "gantry-agent")
        self.procs = {}
        self.logs = {}

    def start(self, first, count):
        for i in range(first, first + count):
            host = f"dist-{i:04d}"
            d = os.path.join(self.env.work, "agents", host)
            os.makedirs(os.path.join(d, "state"), exist_ok=True)
            os.makedirs(os.path.join(d, "root"), exist_ok=True)
            conf = os.path.join(d, "agent.conf")
            with open(conf, "w") as f:
                f.write(f"host_id = {host}\n"
                        f"coordinator = tcp://127.0.0.1:{self.env.agent_port}\n"
                        f"coordinator_pub = tcp://127.0.0.1:{self.env.pub_port}\n"
                        f"state_dir = {d}/state\n"
                        "insecure_dev = true\n"
                        "heartbeat_interval_ms = 1000\n"
                        "[service.web]\n"
                        "driver = binary\n"
                        f"root = {d}/root\n"
                        "restart_command = /bin/true\n"
                        "min_healthy_ms = 0\n"
                        "healthy_deadline_ms = 5000\n"
                        "probe_interval_ms = 50\n"
                        "retain = 2\n")
            log = os.path.join(d, "agent.log")
            self.logs[host] = log
            self.procs[host] = subprocess.Popen([self.bin, "--config", conf], stdout=subprocess.DEVNULL,
                                                stderr=open(log, "w"))

    def alive(self):
        return [h for h, p in self.procs.items() if p.poll() is None]

    def cpu_seconds(self):
        hz = os.sysconf("SC_CLK_TCK")
        total = 0
        for p in self.procs.values():
            try:
                total += proc_cpu_ticks(p.pid)
            except OSError:
                pass
        return total / hz

    def downloads(self, sha):
        """{host: wall time (s) of its `download of <sha> complete` line}."""
        pat = re.compile(r"^(\S+) \S+ \[agent\.fetch\] download of " + re.escape(sha) + " complete")
        out = {}
        for host, log in self.logs.items():
            with open(log) as f:
                for line in f:
                    m = pat.match(line)
                    if m:
                        out[host] = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
                        break
        return out

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.time() + 15
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def sha256_of(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(4 * MiB), b""):
            h.update(b)
    return h.hexdigest()


def perf_all(env, name):
    """--perf: a system-wide profile (every process, kernel included) into the work dir."""
    if not env.args.perf:
        return None
    p = subprocess.Popen(["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", "499", "-o",
                          os.path.join(env.work, f"perf-{name}.data")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def perf_stop(p):
    if p:
        p.send_signal(signal.SIGINT)
        p.wait(60)


def baseline_copy(env, path, n, timeout, perf_name=None):
    """Plain TCP copy of `path` to n receiver processes; returns (seconds, CPU seconds of the
    sender and receivers). The copy processes are this script's only children that exit while
    it runs, so their CPU is the change of RUSAGE_CHILDREN once they are reaped."""
    import resource
    size = os.path.getsize(path)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = os.path.join(env.work, "copy")
    os.makedirs(out, exist_ok=True)
    perf = perf_all(env, perf_name) if perf_name else None  # running before the first byte moves
    try:
        sender = Proc([env.sim, "copy-send", "--file", path, "--conns", str(n), "--timeout-s", str(timeout)],
                      os.path.join(env.work, "copy-send.log"))
        env.procs.append(sender)
        port = wait_until(lambda: sender.event("bound"), 10, what="copy-send")[0]["port"]
        recvs = []
        for i in range(n):
            p = Proc([env.sim, "copy-recv", "--connect", f"127.0.0.1:{port}", "--out", os.path.join(out, f"r{i}.bin"),
                      "--timeout-s", str(timeout)], os.path.join(env.work, f"copy-recv-{i}.log"))
            recvs.append(p)
            env.procs.append(p)
        start = wait_until(lambda: sender.event("start"), 60, what="copy-send start")[0]
        wait_until(lambda: all(r.event("done") for r in recvs), timeout, 0.05, "every receiver done")
    finally:
        perf_stop(perf)
    done = [r.event("done")[0] for r in recvs]
    bad = [d for d in done if d["bytes"] != size or not d["fsync_ok"]]
    if bad:
        raise RuntimeError(f"{len(bad)} receivers did not get {size} bytes: {bad[:3]}")
    secs = (max(d["t_us"] for d in done) - start["t0_us"]) / 1e6
    for p in recvs + [sender]:
        p.stop()
        env.procs.remove(p)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    return secs, cpu


def gantry_round(env, agents, version, path, n, timeout):
    """Uploads `path` as `version`, rolls it out to every host in one batch; returns the figures."""
    size = os.path.getsize(path)
    sha = sha256_of(path)
    r = subprocess.run([env.cli, "--coordinator", f"tcp://127.0.0.1:{env.op_port}", "release", "upload", path,
                        "--service", "web", "--version", version], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("upload failed: " + r.stdout + r.stderr)
    time.sleep(1.0)
    sampler = RssSampler(env.coord_pid)
    rss0, _ = sampler.read()
    sampler.start()
    cpu0, acpu0 = proc_cpu_ticks(env.coord_pid), agents.cpu_seconds()
    perf = perf_all(env, "gantry") if n == env.args.receivers else None  # the main round, system-wide
    st = env.op("rollout.start", {"service": "web", "version": version, "plan": {"batches": ["100%"]}})
    assert st["ok"], st
    rid, t0 = st["result"]["id"], st["sent_us"] / 1e6
    try:
        wait_until(lambda: len(agents.downloads(sha)) >= n, timeout, 0.2, f"{n} downloads of {version}")
    finally:
        perf_stop(perf)
    hz = os.sysconf("SC_CLK_TCK")
    cpu1, acpu1 = proc_cpu_ticks(env.coord_pid), agents.cpu_seconds()
    sampler.stop()
    done = agents.downloads(sha)
    end = wait_rollout_end(env, rid, timeout)["result"]
    secs = max(done.values()) - t0
    return {"secs": secs, "size": size, "n": n, "rss0": rss0, "peak": sampler.peak, "hwm": sampler.hwm,
            "samples": sampler.samples, "coord_cpu": (cpu1 - cpu0) / hz, "agents_cpu": acpu1 - acpu0,
            "first": min(done.values()) - t0, "phase": end.get("phase"),
            "rollout_s": end["finished_at"] / 1000.0 - t0 if end.get("finished_at") else None}


def run(args):
    n, small = args.receivers, min(10, args.receivers)
    mib = args.release_mib
    env = Env(args, "distribution")
    agents = Agents(env)
    timeout = args.max_s
    try:
        rel1 = os.path.join(env.work, "web-d1.tar")
        rel2 = os.path.join(env.work, "web-d2.tar")
        # Payload a little below the target so the archive (headers, padding) is about mib MiB.
        payload = mib * MiB - 20 * 1024
        size = make_release(rel2, "d2", payload, 2)
        make_release(rel1, "d1", payload, 1)

        # Baseline first: the same archive to the same number of receivers over plain TCP.
        base_s, base_cpu = baseline_copy(env, rel2, n, timeout, "baseline")
        base_tp = n * size / MiB / base_s
        print(f"baseline: {n} x {size / MiB:.1f} MiB over plain TCP in {base_s:.2f} s = {base_tp:.0f} MiB/s")

        env.start_coordinator(hb_ms=1000)
        # Round 1: `small` receivers (memory reference).
        agents.start(0, small)
        wait_until(lambda: sum(h["online"] for h in env.op("hosts", {}, brief=False)["result"]["hosts"]) >= small,
                   60, 0.2, f"{small} agents online")
        g1 = gantry_round(env, agents, "d1", rel1, small, timeout)
        print(f"gantry {small}: {g1}")
        # Round 2: all n receivers, a different release of the same size.
        agents.start(small, n - small)
        wait_until(lambda: sum(h["online"] for h in env.op("hosts", {}, brief=False)["result"]["hosts"]) >= n,
                   120, 0.2, f"{n} agents online")
        time.sleep(2.0)
        load = loadavg()
        g2 = gantry_round(env, agents, "d2", rel2, n, timeout)
        print(f"gantry {n}: {g2}")
        # The baseline again, after: other work on this machine comes and goes, so Gantry is
        # bracketed by two baseline runs and compared with the faster one.
        base_s2, base_cpu2 = baseline_copy(env, rel2, n, timeout)
        print(f"baseline again: {n} x {size / MiB:.1f} MiB over plain TCP in {base_s2:.2f} s = {n * size / MiB / base_s2:.0f} MiB/s")
        base_runs = f"{base_s:.2f} s before, {base_s2:.2f} s after"
        if base_s2 < base_s:
            base_cpu = base_cpu2
        base_s = min(base_s, base_s2)
        base_tp = n * size / MiB / base_s
        tp = n * size / MiB / g2["secs"]
        tp1 = small * size / MiB / g1["secs"]
        ratio = tp / base_tp
        total_gib = n * size / (1024 * MiB)
        d1 = (g1["peak"] - g1["rss0"]) / 1024
        d2 = (g2["peak"] - g2["rss0"]) / 1024
        rows = [(f"{mib} MiB release to {n} agents: throughput (MiB/s)", f"{tp:.0f}", f"{base_tp:.0f} (plain TCP copy)",
                 f"{ratio:.2f}", "≥ 0.5 of baseline", ratio >= 0.5 and g2["phase"] == "succeeded"),
                (f"time until the last of {n} agents has the artifact (s)", f"{g2['secs']:.2f}", f"{base_s:.2f} ({base_runs})",
                 f"{g2['secs'] / base_s:.2f}x", "—", None),
                (f"coordinator peak RSS during the transfer, {n} receivers (MiB; growth over idle)",
                 f"{g2['peak'] / 1024:.0f} (+{d2:.0f})", f"{total_gib:.1f} GiB served", f"{d2 / (n * size / MiB):.2%}",
                 "≪ receivers × size (< 5%)", d2 < 0.05 * n * size / MiB),
                (f"coordinator peak RSS, {small} receivers (MiB; growth over idle)", f"{g1['peak'] / 1024:.0f} (+{d1:.0f})",
                 f"{small * size / (1024 * MiB):.2f} GiB served", f"{d2 / max(d1, 1):.1f}x growth for {n // small}x receivers",
                 "—", None),
                (f"{small} agents: throughput (MiB/s)", f"{tp1:.0f}", "—", "—", "—", None),
                (f"CPU seconds of the {n}-receiver transfer: coordinator / all agents (Gantry); sender + receivers (baseline)",
                 f"{g2['coord_cpu']:.1f} / {g2['agents_cpu']:.1f}", f"{base_cpu:.1f}",
                 f"{(g2['coord_cpu'] + g2['agents_cpu']) / max(base_cpu, 0.01):.2f}x", "—", None)]
        record("distribution", f"6. Release distribution ({mib} MiB to {n} real agents)", "bench/run distribution", rows,
               f"Rollout {g2['phase']} (all {n} hosts in one batch; rollout.start → finished_at {g2['rollout_s']:.2f} s, "
               f"first agent done after {g2['first']:.2f} s). Archive {size} bytes of random content. "
               f"Gantry: rollout.start sent → the last agent's log line `download of <sha> complete` (all bytes written and "
               "fsynced, the sha256 computed while writing checked; extraction follows and overlaps other agents' downloads). Baseline: one "
               "thread serving the same archive to N TCP connections with non-blocking sendfile (epoll), N receiver "
               "processes each writing its own file (256 KiB reads) and fsyncing it; first byte offered → last fsync; run "
               "before and after the Gantry rounds, the faster of the two counts. "
               f"Coordinator VmRSS sampled every 20 ms ({g2['samples']} samples; VmHWM {g2['hwm'] / 1024:.0f} MiB). "
               f"All {n} agents, the coordinator and the baseline share the machine's {os.cpu_count()} cores; "
               f"load average before the {n}-agent round: {load}.")
        return 0 if g1["phase"] == g2["phase"] == "succeeded" else 1
    finally:
        agents.stop()
        env.close()
