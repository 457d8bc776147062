"""Figure 5: agent footprint and local swap (bench/run footprint).

A real, secure coordinator (CURVE keys, the agent's key enrolled with --accept-agent-key,
releases signed with a release key) and one real gantry-agent with the binary driver on its own
install root. Its service is the demo service, already running; the restart command is
/bin/true and the probe an HTTP GET of the service's /health, with min_healthy_ms = 0 (no soak),
so the agent's whole job is: journal, swap `current`, run the restart command, probe once, report.
The agent spawns the restart command's shell before it journals the order (the shell starts up
meanwhile and runs the command once the swap is made: RealProcessRunner::prepare_shell); the
floor does its steps one after another, as issue 8 defines it (their sum).

1. Idle: after the agent is welcomed and has settled, its VmRSS and its CPU time (per-thread
   schedstat, ns) over --idle-s seconds.
2. Local swap: two releases are rolled out once each (download + extract; not measured), then
   --runs rollouts alternate between them, each an installed release (no download). The agent's
   own `order <id> timings:` log line gives its time from the Order's arrival to the Report sent
   (restart and verify run as one worker job; `restart_command` and `probe` are its two parts).
   Each rollout is started by one client process that stays silent until 50 ms later and then
   follows it to its end (`gantry-fleet-sim op --wait-end-after-ms`): no process of the bench
   starts, asks or exits while the agent works (a poller did, and its CPU showed in the agent's
   time). After each rollout, gantry-swap-floor does the unavoidable steps once on the same filesystem
   (symlink + rename over `current`, fsync of the directory, fork/exec `/bin/sh -c /bin/true` and
   wait, one HTTP GET of the same /health): the same-run baseline. Ratio = median agent time from
   the Order's arrival to verified (the probe passed: issue 8's definition; `total` minus the
   `report` phase, which records the result durably and sends the Report) / median floor total
   (service start-up and soak are 0 here, so nothing is subtracted). The time to the Report
   sent is reported too.

Every process is stopped by pid at the end; every wait is bounded."""

import json
import os
import re
import statistics
import subprocess
import tarfile
import time
import urllib.request

from bench import Env, Proc, free_port, proc_rss_kib, record, wait_until

HOST = "foot-1"


def keygen(tool, prefix, *sub):
    r = subprocess.run([tool, *sub, "keygen", "--out", prefix], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{tool} keygen failed: {r.stdout}{r.stderr}")
    return prefix + ".key", prefix + ".pub"


def cpu_ns(pid):
    """On-CPU time of every live thread of pid (schedstat, ns): finer than utime+stime ticks."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def status_field(pid, name):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(name + ":"):
            return line.split()[1]
    return "?"


def smaps_rollup(pid):
    """{field: KiB} from /proc/PID/smaps_rollup (Pss, Anonymous, Private_Clean, ...)."""
    out = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            out[parts[0][:-1]] = int(parts[1])
    return out


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def make_release(env, version):
    """A small ustar release: bin/app and a config, signed with the bench's release key."""
    d = os.path.join(env.work, "rel-" + version)
    os.makedirs(os.path.join(d, "bin"), exist_ok=True)
    with open(os.path.join(d, "bin", "app"), "w") as f:
        f.write("#!/bin/sh\necho " + version + "\n")
    os.chmod(os.path.join(d, "bin", "app"), 0o755)
    with open(os.path.join(d, "release.conf"), "w") as f:
        f.write(f"version={version}\n")
    path = os.path.join(env.work, f"web-{version}.tar")
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        t.add(os.path.join(d, "bin"), arcname="bin")
        t.add(os.path.join(d, "release.conf"), arcname="release.conf")
    return path


def cli(env, *args, timeout=60):
    r = subprocess.run([env.cli, "--coordinator", f"tcp://127.0.0.1:{env.op_port}"] + env.op_security + list(args),
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"gantry {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def agent_timings(log_path):
    """[(order id, {key: int})] from the agent's `order <id> timings: k=<n>us ...` lines."""
    out = []
    pat = re.compile(r"order (\S+) timings: (.*)$")
    for line in open(log_path):
        m = pat.search(line)
        if m:
            out.append((m.group(1), {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}))
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def run(args):
    env = Env(args, "footprint")
    demo = agent = None
    try:
        kdir = os.path.join(env.work, "keys")
        os.makedirs(kdir)
        c_key, c_pub = keygen(env.coord_bin, os.path.join(kdir, "coordinator"))
        a_key, a_pub = keygen(env.cli, os.path.join(kdir, "admin"))
        r_key, r_pub = keygen(env.cli, os.path.join(kdir, "release"), "release")
        agent_bin = os.path.join(env.bin, "agent", "gantry-agent")
        g_key, g_pub = keygen(agent_bin, os.path.join(kdir, HOST))
        env.coord_security = ["--server-key", c_key, "--admin-key", f"bench={a_pub}", "--accept-agent-key", f"{HOST}={g_pub}"]
        env.op_security = ["--key", a_key, "--coordinator-key", c_pub]
        env.start_coordinator(hb_ms=1000)

        # The service: the demo service, already running; the agent only probes it.
        port = free_port()
        health = f"http://127.0.0.1:{port}/health"
        demo = Proc([os.path.join(env.bin, "demo", "gantry-demo-service"), "--port", str(port), "--version", "bench",
                     "--max-lifetime-s", str(args.max_s)], os.path.join(env.work, "demo.log"))
        env.procs.append(demo)
        wait_until(lambda: http_ok(health), 20, 0.1, "the demo service")

        adir = os.path.join(env.work, "agent")
        root = os.path.join(adir, "root")
        os.makedirs(root)
        conf = os.path.join(adir, "agent.conf")
        with open(conf, "w") as f:
            f.write(f"host_id = {HOST}\ncoordinator = tcp://127.0.0.1:{env.agent_port}\n"
                    f"coordinator_pub = tcp://127.0.0.1:{env.pub_port}\nstate_dir = {adir}/state\n"
                    f"agent_key = {g_key}\ncoordinator_key = {c_pub}\nrelease_public_key = {r_pub}\n"
                    "heartbeat_interval_ms = 1000\n\n[service.web]\ndriver = binary\n"
                    f"root = {root}\nrestart_command = /bin/true\nhttp_probe = {health}\n"
                    "probe_interval_ms = 100\nmin_healthy_ms = 0\nhealthy_deadline_ms = 10000\nretain = 3\n")
        agent_log = os.path.join(adir, "agent.log")
        agent = Proc([agent_bin, "--config", conf], agent_log)
        env.procs.append(agent)
        wait_until(lambda: "welcomed by the coordinator" in open(agent_log).read() or agent.p.poll() is not None, 30, 0.1,
                   "the agent's welcome")
        if agent.p.poll() is not None:
            raise RuntimeError("agent exited:\n" + open(agent_log).read()[-3000:])
        pid = agent.p.pid

        # 1. Idle.
        time.sleep(args.settle_s)
        c0, t0 = cpu_ns(pid), time.monotonic()
        time.sleep(args.idle_s)
        c1, t1 = cpu_ns(pid), time.monotonic()
        idle_pct = 100.0 * (c1 - c0) / 1e9 / (t1 - t0)
        idle_rss = proc_rss_kib(pid)
        idle_threads = status_field(pid, "Threads")
        roll = smaps_rollup(pid)
        with open(f"/proc/{pid}/smaps") as src, open(os.path.join(env.work, "agent-idle-smaps.txt"), "w") as dst:
            dst.write(src.read())  # per mapping, for finding what the resident set is made of

        # 2. Local swaps. Two releases installed once (not measured), then alternating rollouts.
        for v in ("v1", "v2"):
            tar = make_release(env, v)
            subprocess.run([env.cli, "release", "sign", "--key", r_key, tar, "--service", "web", "--version", v],
                           capture_output=True, text=True, timeout=30, check=True)
            cli(env, "release", "upload", tar, "--service", "web", "--version", v)
        floor_root = os.path.join(env.work, "floor")
        floor_bin = os.path.join(env.bin, "bench", "gantry-swap-floor")
        floor = {"swap_us": [], "dir_fsync_us": [], "restart_us": [], "probe_us": [], "total_us": []}
        rids = []
        warm = 2
        for i in range(warm + args.runs):
            v = "v1" if i % 2 == 0 else "v2"
            # One client process starts the rollout and follows it to its end, silent for the first
            # 50 ms: no request, start-up or exit of the bench's own processes shares the two CPUs
            # with the agent's swap (the floor runs alone too).
            r = env.op("rollout.start", {"service": "web", "version": v, "plan": {"batches": [1]}}, wait_end_after_ms=50)
            if not r.get("ok") or "end" not in r:
                raise RuntimeError(f"rollout.start {v}: {r}")
            rid = r["result"]["id"]
            if r["end"]["phase"] != "succeeded":
                raise RuntimeError(f"rollout {rid} to {v} ended {r['end']['phase']}:\n" + open(agent_log).read()[-3000:])
            rids.append(rid)
            if i < warm:
                continue
            out = subprocess.run([floor_bin, "--root", floor_root, "--restart-command", "/bin/true", "--probe-url", health,
                                  "--runs", "1", "--warmup", "1"], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError("gantry-swap-floor failed: " + out.stderr)
            j = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")][0]
            for k in floor:
                floor[k] += j[k]
        time.sleep(0.3)  # the last timings line follows the report
        rss_after = proc_rss_kib(pid)
        hwm = status_field(pid, "VmHWM")
        timings = agent_timings(agent_log)[warm:]
        if len(timings) < args.runs:
            raise RuntimeError(f"only {len(timings)} timings lines for {args.runs} rollouts")
        tm = [t for _, t in timings[-args.runs:]]
        col = lambda k: [t.get(k, 0) for t in tm]
        a_total = med(col("total"))
        a_verified = med([t["total"] - t.get("report", 0) for t in tm])
        f_total = med(floor["total_us"])
        ratio = a_verified / f_total
        a_journal = med(col("journal"))
        writes = med(col("journal_writes"))
        other = med([t["total"] - t["journal"] - t.get("prepare", 0) - t["activate"] - t["restart_command"] - t["probe"]
                     for t in tm])
        ms = lambda us: f"{us / 1000:.2f}"
        rows = [
            ("agent RSS at idle (MiB; VmHWM %s KiB, %s threads)" % (hwm, idle_threads), f"{idle_rss / 1024:.2f}", "—", "—",
             "≤ 10 MiB", idle_rss <= 10 * 1024),
            ("… of which anonymous (heap, stacks, library data) / file-backed (binary + shared libraries) (MiB)",
             f"{roll.get('Anonymous', 0) / 1024:.2f} / {(idle_rss - roll.get('Anonymous', 0)) / 1024:.2f}", "—", "—", "—", None),
            ("… PSS (shared pages divided among their users) (MiB)", f"{roll.get('Pss', 0) / 1024:.2f}", "—", "—", "—", None),
            (f"agent CPU at idle over {args.idle_s:.0f} s (1 s heartbeats)", f"{idle_pct:.3f}% of a core", "—", "—", "< 0.1%",
             idle_pct < 0.1),
            (f"local swap, order received → verified, median of {len(tm)} (ms)", ms(a_verified),
             f"{ms(f_total)} (swap + dir fsync + restart + probe)", f"{ratio:.2f}x", "≤ 1.2x", ratio <= 1.2),
            ("… order received → report sent (the result recorded durably first) (ms)", ms(a_total), ms(f_total),
             f"{a_total / f_total:.2f}x", "—", None),
            ("… symlink swap (ms)", ms(med(col("activate"))), ms(med(floor["swap_us"])), "—", "—", None),
            ("… dir fsync (ms; the agent's runs while the restart command does, off the order's path unless it "
             "outlasts the command and the probe)", ms(med(col("swap_sync"))), ms(med(floor["dir_fsync_us"])), "—", "—", None),
            ("… spawning the restart command's shell (ms; the agent's posix_spawn, before the swapping record; the shell "
             "starts up while the record is written and the swap made)", ms(med(col("prepare"))), "in the next row", "—", "—",
             None),
            ("… restart command /bin/true (ms; the agent's from its go after the swap to its exit, the floor's from fork to "
             "exit)", ms(med(col("restart_command"))), ms(med(floor["restart_us"])), "—", "—", None),
            ("… one HTTP probe (ms)", ms(med(col("probe"))), ms(med(floor["probe_us"])), "—", "—", None),
            (f"… journal writes (ms; {writes:.0f} records per order: accept+swapping and the result each with an fdatasync, "
             "the verifying one without (it guards no act), written while the first probe runs)", ms(a_journal), "0", "—", "—",
             None),
            ("… everything else: threads, messages, logging (ms; understated by the parts that overlap: the shell's "
             "start-up, the verifying record written while the first probe runs)", ms(other), "—", "—", "—", None),
            ("agent RSS after the rollouts (MiB)", f"{rss_after / 1024:.2f}", "—", "—", "—", None),
        ]
        per_phase = {k: ms(med(col(k))) for k in ("accept", "swap", "restart", "verify", "report")}
        cmd = "bench/run footprint" + (f" --runs {args.runs}" if args.runs != 20 else "")
        record("footprint", "5. Agent footprint and local swap", cmd, rows,
               "Secure coordinator (CURVE, enrolled agent key, signed releases) and one real gantry-agent, binary driver, "
               "install root on the same ext4 filesystem as the floor's. Service: the demo service, already running; "
               "restart_command = /bin/true; http_probe on its /health; min_healthy_ms = 0 (soak 0) and nothing starts, so "
               "overhead = the agent's whole time. Each rollout: one `gantry-fleet-sim op --wait-end-after-ms 50` process "
               "starts it and stays silent while the agent works. Idle: VmRSS, and CPU as the sum of the threads' schedstat run time, after "
               f"the welcome and {args.settle_s:.0f} s of settling. Swap: {len(tm)} rollouts alternating between two "
               "installed releases (the 2 that downloaded and extracted them are not counted); agent time from its "
               "`order <id> timings:` log line: to verified = Order arrival → the probe passed (its total minus the "
               "`report` phase: the result record's fdatasync and the Report's send), issue 8's span; to Report sent = its "
               "total; floor: gantry-swap-floor once after each "
               f"rollout. Agent phase medians (ms): {per_phase}.")
        return 0
    finally:
        env.close()
