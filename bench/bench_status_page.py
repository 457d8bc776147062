"""The status page's cost to the coordinator (issue 24): 10,000 simulated agents registered, the
coordinator's CPU (utime + stime from /proc, all its threads) over fixed windows with 0, 1, 4 and
16 open status pages, at rest and during a rollout of all 10,000 hosts.

A "page" is what the page's script does, without a browser: every 2 s a GET of /status with
Accept-Encoding: gzip and If-None-Match (the ETag of the snapshot it holds: an unchanged one is
answered 304 with no body), and a GET of /rollouts (the history) every 30 s and when a rollout
starts or ends. Each page is a thread of this process; the bench counts answers, bytes and
latency per window.

Baseline in the same run: the same window with no page open. The figure of merit is the added
CPU per open page; `flat` means it does not grow with the number of pages beyond the cost of
sending the compressed snapshot. For comparison with the code before the fix (cpp-httplib
compressed the whole /status at zlib's default level 6 for every request) the bench also times,
in its own process with the same zlib, one level-6 compression of the /status it read."""

import gzip
import json
import os
import statistics
import threading
import time
import urllib.request
import zlib

from bench import Env, free_port, proc_cpu_ticks, record, wait_until

HZ = os.sysconf("SC_CLK_TCK")


class Page(threading.Thread):
    """One open status page: /status every 2 s (If-None-Match), /rollouts every 30 s."""

    def __init__(self, base, stop, start_at):
        super().__init__(daemon=True)
        self.base, self.stop, self.start_at = base, stop, start_at
        self.etag = None
        self.lock = threading.Lock()
        self.samples = []  # (status, bytes on the wire, ms)
        self.history_at = 0.0

    def get(self, path, etag=None):
        req = urllib.request.Request(self.base + path, headers={"Accept-Encoding": "gzip"})
        if etag:
            req.add_header("If-None-Match", etag)
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
                return r.status, body, r.headers.get("ETag"), (time.monotonic() - t0) * 1000
        except urllib.error.HTTPError as e:
            return e.code, b"", e.headers.get("ETag"), (time.monotonic() - t0) * 1000
        except OSError:
            return 0, b"", None, (time.monotonic() - t0) * 1000

    def run(self):
        time.sleep(self.start_at)  # pages do not poll in lockstep
        while not self.stop.is_set():
            t = time.monotonic()
            st, body, tag, ms = self.get("/status", self.etag)
            if st == 200:
                self.etag = tag
            with self.lock:
                self.samples.append((st, len(body), ms))
            if t - self.history_at >= 30:
                self.get("/rollouts")
                self.history_at = t
            self.stop.wait(max(0.0, 2.0 - (time.monotonic() - t)))

    def take(self):
        with self.lock:
            s, self.samples = self.samples, []
        return s


def window(env, base, pages, seconds):
    stop = threading.Event()
    ps = [Page(base, stop, 2.0 * k / max(pages, 1)) for k in range(pages)]
    for p in ps:
        p.start()
    time.sleep(2.5)  # every page has polled once: its ETag is set
    for p in ps:
        p.take()
    c0, t0 = proc_cpu_ticks(env.coord_pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = proc_cpu_ticks(env.coord_pid), time.monotonic()
    stop.set()
    samples = [s for p in ps for s in p.take()]
    for p in ps:
        p.join(15)
    cpu = (c1 - c0) / HZ / (t1 - t0)
    ok = [s for s in samples if s[0] == 200]
    same = [s for s in samples if s[0] == 304]
    bad = [s for s in samples if s[0] not in (200, 304)]
    ms = sorted(s[2] for s in samples)
    return {"pages": pages, "cpu": cpu, "polls": len(samples), "200": len(ok), "304": len(same), "bad": len(bad),
            "kib": statistics.mean([s[1] for s in ok]) / 1024 if ok else 0,
            "p50": ms[len(ms) // 2] if ms else 0, "max": ms[-1] if ms else 0}


def line(w):
    return (f"{w['pages']:>2} pages: coordinator CPU {100 * w['cpu']:5.1f}% | polls {w['polls']} "
            f"(200: {w['200']}, 304: {w['304']}, failed: {w['bad']}), {w['kib']:.0f} KiB per 200, "
            f"latency p50 {w['p50']:.0f} ms, max {w['max']:.0f} ms")


def run(args):
    n, procs, secs = args.agents, args.procs, args.page_window_s
    counts = [0, 1, 4, 16]
    env = Env(args, "status-page")
    try:
        port = free_port()
        env.start_coordinator(hb_ms=1000, http_address=f"127.0.0.1:{port}")
        base = f"http://127.0.0.1:{port}"
        # Slow orders (0.5 s swap + 0.5 s verify): the rollout moves for the whole measurement.
        sims = env.start_sims(n, procs, extra=["--swap-ms", "500", "--verify-ms", "500"])
        env.wait_welcomed(sims, n, 180)
        env.upload("v1")
        time.sleep(3.0)

        status = urllib.request.urlopen(base + "/status", timeout=30).read()
        t0 = time.process_time()
        level6 = zlib.compress(status, 6)
        old_ms = (time.process_time() - t0) * 1000
        gz1 = len(gzip.compress(status, 1))
        print(f"/status at {n} hosts: {len(status) / 1024:.0f} KiB JSON, {gz1 / 1024:.0f} KiB as served (gzip -1); "
              f"one zlib level-6 compression (what each request cost before): {old_ms:.0f} ms CPU, "
              f"{len(level6) / 1024:.0f} KiB")

        rest = []
        for k in counts:
            rest.append(window(env, base, k, secs))
            print("at rest:", line(rest[-1]))

        r = env.op("rollout.start", {"service": "web", "version": "v1", "plan": {"batches": [100]}})
        assert r["ok"], r
        rid = r["result"]["id"]
        time.sleep(3.0)
        moving = []
        for k in counts:
            moving.append(window(env, base, k, secs))
            ro = json.loads(urllib.request.urlopen(f"{base}/rollouts/{rid}", timeout=30).read())
            moving[-1]["phase"], moving[-1]["batch"] = ro.get("phase"), ro.get("batch")
            print(f"rollout (batch {ro.get('batch')} of {ro.get('batches_total')}, {ro.get('phase')}):", line(moving[-1]))
        still = all(w.get("phase") == "running" for w in moving)

        def rows_of(label, ws):
            base0 = ws[0]["cpu"]
            out = []
            for w in ws:
                extra = (w["cpu"] - base0) / w["pages"] if w["pages"] else 0
                out.append((f"{label}: coordinator CPU with {w['pages']} open page(s)", f"{100 * w['cpu']:.1f}%",
                            f"{100 * base0:.1f}%", f"+{100 * extra:.2f}%/page" if w["pages"] else "—",
                            "flat in pages", None))
            return out

        rows = rows_of("at rest", rest) + rows_of("during a rollout", moving)
        rows.append((f"/status at {n} hosts: JSON / as served (gzip, once per snapshot)", f"{len(status) / 1024:.0f} KiB",
                     f"{gz1 / 1024:.0f} KiB", "—", "—", None))
        rows.append(("before the fix, per request: one zlib level-6 compression of /status", f"{old_ms:.0f} ms CPU",
                     "—", "—", "—", None))
        worst = max(moving + rest, key=lambda w: w["max"])
        record("status-page", f"Status page: coordinator CPU with 0-16 open pages, {n} hosts registered", "bench/run status-page",
               rows,
               f"{secs:.0f} s windows; each page polls /status every 2 s with If-None-Match and gzip, /rollouts every 30 s. "
               f"Polls answered 200 / 304 / failed over all windows: {sum(w['200'] for w in rest + moving)} / "
               f"{sum(w['304'] for w in rest + moving)} / {sum(w['bad'] for w in rest + moving)}; slowest answer "
               f"{worst['max']:.0f} ms. The rollout (batches of 100, 1 s per order) was "
               f"{'running through every window' if still else 'not running through every window'}. "
               f"CPU is all the coordinator's threads (event loop, zmq I/O, HTTP) on a machine whose 2 CPUs also run "
               f"the {procs} simulator processes and the pages.")
        return 0 if all(w["bad"] == 0 for w in rest + moving) else 1
    finally:
        env.close()
