"""Standby coordinators on etcd (issue 23): bench/run ha-orchestration | failover.

ha-orchestration: figure 2 (10,000 simulated hosts, 100 batches of 100, instant swap, no
soak) run twice in one invocation, on the same simulators and machine: once with the coordinator
on its SQLite store, once on a three-member etcd cluster (Debian's etcd, on loopback, started
here with the limits docs/HIGH_AVAILABILITY.md asks for). Ratio = etcd time / SQLite time
(target <= 2x). Each run also has its own bare floor (figure 2's), shown for reference.

failover: three coordinators on a three-member etcd cluster with real agents
(bench/ha_failover.cc, the integration tests' harness): the leader is SIGKILLed while a batch is
in flight, --runs times; reported are the time from the kill until another coordinator says it
leads, and until the new leader orders the next batch (target <= lease TTL + 2 s)."""
import json
import os
import shutil
import signal
import subprocess
import statistics
import tempfile
import time

import bench


class EtcdCluster:
    """Three etcd members on loopback (free ports), data under a temp dir; stopped by close()."""

    def __init__(self, n=3):
        self.dir = tempfile.mkdtemp(prefix="gantry-bench-etcd.")
        self.procs = []
        ports = [(bench.free_port(), bench.free_port()) for _ in range(n)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p[1]}" for i, p in enumerate(ports))
        for i, (client, peer) in enumerate(ports):
            argv = ["etcd", "--name", f"m{i}", "--data-dir", os.path.join(self.dir, f"m{i}"),
                    "--listen-client-urls", f"http://127.0.0.1:{client}",
                    "--advertise-client-urls", f"http://127.0.0.1:{client}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--initial-cluster-token", "gantry-bench", "--max-txn-ops", "100000",
                    "--max-request-bytes", str(64 << 20), "--log-level", "warn"]
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                               stderr=open(os.path.join(self.dir, f"m{i}.log"), "w")))
        self.uri = "etcd://" + ",".join(f"127.0.0.1:{c}" for c, _ in ports)
        eps = ",".join(f"http://127.0.0.1:{c}" for c, _ in ports)
        bench.wait_until(lambda: subprocess.run(["etcdctl", "--endpoints", eps, "endpoint", "health"],
                                                capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}).returncode == 0,
                         60, 0.2, "etcd cluster healthy")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def etcd_floor(args, uri):
    """gantry-etcd-floor against the same cluster: figure 2's keys, as many transactions, nothing else."""
    prog = os.path.join(os.path.abspath(args.bin), "bench", "gantry-etcd-floor")
    out = subprocess.run([prog, "--store", uri, "--hosts", str(args.agents), "--batch", str(args.batch)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError("gantry-etcd-floor failed:\n" + out.stderr[-3000:])
    floor = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"etcd floor: {floor['operations']} operations in {floor['transactions']} transactions: {floor['ms']:.0f} ms")
    return floor


def bench_ha_orchestration(args):
    # This machine's load varies from minute to minute (other work shares it): the pair is run
    # --ha-runs times, SQLite then etcd each time (a fresh cluster per run), and the medians compared.
    sqlite_ms, etcd_ms, floors, ok = [], [], [], True
    bare = {"sqlite": [], "etcd": []}
    for i in range(args.ha_runs):
        print(f"-- run {i + 1} of {args.ha_runs}")
        etcd = EtcdCluster(3)
        try:
            sqlite = bench._orchestration_once(args)
            on_etcd = bench._orchestration_once(args, extra=("--store", etcd.uri, "--name", "bench-c1"))
            floor = etcd_floor(args, etcd.uri)
        finally:
            etcd.close()
        ok = ok and sqlite["ok"] and on_etcd["ok"]
        sqlite_ms.append(float(sqlite["rows"][0][1]))
        etcd_ms.append(float(on_etcd["rows"][0][1]))
        bare["sqlite"].append(sqlite["rows"][0][3])
        bare["etcd"].append(on_etcd["rows"][0][3])
        floors.append(floor)
        print(f"run {i + 1}: etcd {etcd_ms[-1]:.0f} ms, SQLite {sqlite_ms[-1]:.0f} ms: "
              f"{etcd_ms[-1] / sqlite_ms[-1]:.2f}x; etcd floor {float(floor['ms']):.0f} ms")
    s_ms = statistics.median(sqlite_ms)
    e_ms = statistics.median(etcd_ms)
    ratio = e_ms / s_ms
    f_ms = statistics.median(float(f["ms"]) for f in floors)
    floor = floors[0]
    runs = "; ".join(f"{e:.0f} / {q:.0f} = {e / q:.2f}x" for e, q in zip(etcd_ms, sqlite_ms))
    rows = [(f"rollout wall time, 10k hosts / 100 batches, etcd store, median of {args.ha_runs} (ms)", f"{e_ms:.0f}",
             f"{s_ms:.0f} (SQLite)", f"{ratio:.2f}x", "≤ 2x SQLite", ratio <= 2.0 and ok),
            ("… each run, etcd / SQLite (ms)", runs, "—", "—", "—", None),
            ("… each run against its own bare floor", ", ".join(bare["etcd"]), ", ".join(bare["sqlite"]), "—", "—",
             None),
            (f"etcd floor: the same keys ({floor['operations']:,} operations, {floor['bytes'] / 1048576:.1f} MiB) in "
             f"{floor['transactions']} transactions, no coordinator, median (ms)", f"{e_ms:.0f}", f"{f_ms:.0f} (floor)",
             f"{e_ms / f_ms:.2f}x", "—", None),
            ("… Gantry on etcd less the etcd floor, against the whole SQLite run (ms)", f"{e_ms - f_ms:.0f}",
             f"{s_ms:.0f} (SQLite)", f"{(e_ms - f_ms) / s_ms:.2f}x", "—", None)]
    bench.record("ha-orchestration", "2b. Orchestration on the etcd store (10,000 hosts, 100 batches of 100)",
                 f"bench/run ha-orchestration --ha-runs {args.ha_runs}", rows,
                 "The same simulators, one coordinator each time: first on SQLite (the state dir), then on a "
                 "three-member etcd cluster on this machine's loopback (its members share the 2 CPUs with the "
                 "coordinator and the simulators). A batch transition is one fenced etcd transaction "
                 "(docs/HIGH_AVAILABILITY.md, 'Transactions and limits'). The etcd floor (bench/etcd_floor.cc) writes "
                 "the keys figure 2 writes (the rollout's plan, then per batch the orders and their slots, the "
                 "previous batch's results and final slots, one key for its timeline entries and one for its "
                 "events, the header, the counters and the write guard; values of figure 2's sizes) in as many "
                 "transactions, one after the other, through "
                 "the same etcd client, on the same cluster after the runs: what etcd alone costs, with no "
                 "coordinator, agents or reads competing for the 2 CPUs.")
    return 0


def bench_failover(args):
    prog = os.path.join(os.path.abspath(args.bin), "bench", "gantry-ha-failover")
    out = subprocess.run([prog, "--runs", str(args.failover_runs), "--lease-ttl", str(args.lease_ttl)],
                         capture_output=True, text=True, timeout=1800)
    runs = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    with open("/tmp/gantry-ha-failover.stderr", "w") as f:  # why a run did not complete
        f.write(out.stderr)
    failed = [l for l in out.stderr.splitlines() if "failed" in l or l.startswith("no new leader") or
              l.startswith("batch 2 never") or l.startswith("fleet did not") or l.startswith("rollout not")]
    if not runs:
        raise RuntimeError("gantry-ha-failover printed no run:\n" + out.stdout[-3000:] + out.stderr[-3000:])
    elected = sorted(r["elected_ms"] for r in runs)
    ordered = sorted(r["next_batch_ms"] for r in runs)
    target = args.lease_ttl * 1000 + 2000
    rows = [("leader SIGKILLed → another leads (ms), median / max", f"{bench.pct(elected, 50):.0f} / {elected[-1]:.0f}",
             # The issue: "a standby takes over within the lease TTL plus a few seconds". A lease
             # renewed just before the kill lives a whole TTL, and etcd revokes expired leases in
             # passes every 500 ms: TTL + 1 s (this row asked TTL + 250 ms until 2026-12-07).
             "—", "—", f"≤ TTL + 1 s = {args.lease_ttl * 1000 + 1000} ms", elected[-1] <= args.lease_ttl * 1000 + 1000),
            ("leader SIGKILLed → next batch ordered by the new leader (ms), median / max",
             f"{bench.pct(ordered, 50):.0f} / {ordered[-1]:.0f}", "—", "—", f"≤ TTL + 2 s = {target} ms",
             ordered[-1] <= target)]
    bench.record("failover", "8b. Failover between coordinators on etcd",
                 f"bench/run failover --failover-runs {args.failover_runs} --lease-ttl {args.lease_ttl}", rows,
                 f"{len(runs)} of {args.failover_runs} runs completed"
                 + (f" (the others: {'; '.join(x[:160] for x in failed[:3])}; their output is in "
                    "/tmp/gantry-ha-failover.stderr)" if len(runs) < args.failover_runs else "")
                 + ", each a fresh three-member etcd cluster, three coordinators and four real agents; "
                 "the leader is SIGKILLed with a batch's orders in flight. 'Another leads' is read from the "
                 "coordinators' /status (polled every 20 ms); 'next batch ordered' from the new leader's event log "
                 "(its own clock).")
    return 0
