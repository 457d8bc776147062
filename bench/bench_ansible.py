"""Figure 7 of issue 8, "Against Ansible": the same rolling update of 20 hosts in batches of 5
(copy the release, swap the `current` symlink, restart the service, check it over HTTP) done by
Gantry (a real coordinator and 20 real agents, CURVE, enrolled keys, signed releases) and by
Ansible (Debian's ansible-core over SSH to a private sshd on 127.0.0.1), timed in one run.

Both tools roll the same real service (demo/demo_service.cc, started by demo/restart-service)
from the same release tarballs, each host its own install root and HTTP port. Every round uses a
new version (v3, v4, ...), so both tools copy and extract a release they have not seen.

CPU accounting (the services themselves are excluded on both sides; everything the tool runs
to do the update, including the shared restart command, is counted on both sides):
- a long-lived process (the coordinator, each agent, sshd) is counted as its process tree:
  utime + stime + cutime + cstime of it and of every live descendant, read from /proc/PID/stat
  before and after the update. A child that exits and is reaped inside the tree moves its time
  into its parent's cutime/cstime, so the sum is conserved; a service started by restart-service
  is detached (setsid, orphaned to init) and so leaves the tree uncounted;
- a short-lived command (ansible-playbook with its forks and ssh clients, the gantry CLI) is
  counted with os.wait4's rusage, which includes every descendant it reaped;
- ssh's ControlPersist master daemonizes (it is reparented away from ansible-playbook and never
  reaped by it): it is found by its ControlPath (in the bench work dir) in /proc/*/cmdline and
  counted like a long-lived process. Masters are closed after every Ansible round, so every round
  starts without a warm SSH connection, as an operator's rollout minutes apart would.

Bounded: every wait has a timeout; every process started is stopped by pid at the end."""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

from bench import REPO, Env, free_port, record, wait_until

N_HOSTS = 20
BATCH = 5
CLK = os.sysconf("SC_CLK_TCK")


# ---- CPU accounting ------------------------------------------------------------------------------

def _stat(pid):
    """(ppid, starttime, utime + stime, cutime + cstime) in clock ticks, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(parts[1]), int(parts[19]), int(parts[11]) + int(parts[12]), int(parts[13]) + int(parts[14])


def _all_stats():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = _stat(int(d))
            if s:
                out[int(d)] = s
    return out


def tree_ticks(roots, stats=None):
    """CPU ticks of the process trees under `roots`: own + reaped children, live descendants included."""
    stats = stats or _all_stats()
    kids = {}
    for pid, s in stats.items():
        kids.setdefault(s[0], []).append(pid)
    total, todo, seen = 0, [r for r in roots if r in stats], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][2] + stats[pid][3]
        todo.extend(kids.get(pid, []))
    return total


def procs_with_arg(needle):
    """{(pid, starttime): own + reaped ticks} of processes whose command line contains `needle`."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle.encode() in cmd:
            s = _stat(int(d))
            if s:
                out[(int(d), s[1])] = s[2] + s[3]
    return out


def timed_run(argv, timeout, env=None, log=None, cwd=None):
    """Runs argv; returns (exit code, wall s, CPU s of it and every descendant it reaped)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        if time.monotonic() > deadline:
            os.kill(p.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.005)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
    if log:
        out.close()
    return p.returncode, wall, ru.ru_utime + ru.ru_stime


# ---- set-up ----------------------------------------------------------------------------------------

def ensure_packages():
    need = [("ansible-playbook", "ansible-core"), ("/usr/sbin/sshd", "openssh-server"), ("ssh", "openssh-client")]
    missing = [pkg for exe, pkg in need if not shutil.which(exe)]
    if not missing:
        return
    print("installing " + " ".join(missing) + " with apt-get")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL, timeout=600, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, timeout=900, check=True)


def run_ok(argv, what, timeout=60, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return r.stdout


def http_get(port, path, timeout=1.0):
    import http.client
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode(errors="replace").strip()
        c.close()
        return r.status, body
    except OSError:
        return None, ""


def check_versions(ports, version):
    """Hosts whose service does not answer `version` on /version."""
    return [i for i, p in enumerate(ports) if http_get(p, "/version") != (200, version)]


class Sshd:
    """A private sshd on 127.0.0.1: its own config, host key, authorized_keys and pid file."""

    def __init__(self, work):
        self.dir = os.path.join(work, "ssh")
        os.makedirs(self.dir, mode=0o700)
        self.port = free_port()
        self.client_key = os.path.join(self.dir, "id_ed25519")
        host_key = os.path.join(self.dir, "host_ed25519")
        for key in (self.client_key, host_key):
            run_ok(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], "ssh-keygen")
        shutil.copy(self.client_key + ".pub", os.path.join(self.dir, "authorized_keys"))
        with open(host_key + ".pub") as f:
            kt, kb = f.read().split()[:2]
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {kt} {kb}\n")
        self.config = os.path.join(self.dir, "sshd_config")
        with open(self.config, "w") as f:
            f.write(f"""# bench/bench_ansible.py: a private sshd for the Ansible baseline
Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.log = os.path.join(self.dir, "sshd.log")
        self.p = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", self.config], stdout=subprocess.DEVNULL,
                                  stderr=open(self.log, "w"))
        wait_until(lambda: self._listening() or self.p.poll() is not None, 20, 0.05, "sshd listening")
        if self.p.poll() is not None:
            raise RuntimeError("sshd exited:\n" + open(self.log).read()[-2000:])

    def _listening(self):
        import socket
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


class AnsibleSide:
    def __init__(self, work, sshd):
        self.work = os.path.join(work, "ansible")
        os.makedirs(self.work)
        self.sshd = sshd
        self.cp_dir = os.path.join(self.work, "cp")
        os.makedirs(self.cp_dir)
        self.ports = [free_port() for _ in range(N_HOSTS)]
        self.roots = [os.path.join(self.work, f"host-{i + 1:02d}") for i in range(N_HOSTS)]
        for r in self.roots:
            os.makedirs(r)
        self.inventory = os.path.join(self.work, "inventory.ini")
        with open(self.inventory, "w") as f:
            f.write("[fleet]\n")
            for i in range(N_HOSTS):
                f.write(f"host-{i + 1:02d} root={self.roots[i]} port={self.ports[i]}\n")
            f.write(f"""
[fleet:vars]
ansible_host=127.0.0.1
ansible_port={sshd.port}
ansible_user=root
ansible_ssh_private_key_file={sshd.client_key}
ansible_ssh_common_args=-o UserKnownHostsFile={sshd.known_hosts} -o IdentitiesOnly=yes
ansible_python_interpreter=/usr/bin/python3
""")
        # Debian ships no ansible.cfg: everything not set here is Ansible's default (forks 5,
        # ssh_args "-C -o ControlMaster=auto -o ControlPersist=60s"). pipelining = True is the
        # documented speed-up; the directories only keep Ansible's files inside the work dir.
        self.cfg = os.path.join(self.work, "ansible.cfg")
        with open(self.cfg, "w") as f:
            f.write(f"""[defaults]
inventory = {self.inventory}
forks = 5
local_tmp = {self.work}/local-tmp
remote_tmp = {self.work}/remote-tmp
retry_files_enabled = False

[ssh_connection]
pipelining = True
control_path_dir = {self.cp_dir}
""")
        self.env = dict(os.environ, ANSIBLE_CONFIG=self.cfg, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                        HOME=os.environ.get("HOME", "/root"))
        self.playbook = os.path.join(REPO, "bench", "ansible", "rolling-update.yml")

    def roll(self, version, tar, log, timeout=600):
        """One ansible-playbook run; returns (ok, wall s, CPU s)."""
        sshd_pid = self.sshd.p.pid
        m0 = procs_with_arg(self.cp_dir)
        s0 = tree_ticks([sshd_pid])
        argv = ["ansible-playbook", self.playbook, "-e", f"version={version}", "-e", f"release_tar={tar}",
                "-e", f"restart_service={REPO}/demo/restart-service"]
        rc, wall, cpu = timed_run(argv, timeout, env=self.env, log=log, cwd=self.work)
        m1 = procs_with_arg(self.cp_dir)
        s1 = tree_ticks([sshd_pid])
        masters = sum(v - m0.get(k, 0) for k, v in m1.items())
        cpu_total = cpu + (s1 - s0 + masters) / CLK
        self.close_masters()
        return rc == 0, wall, cpu_total, {"playbook": cpu, "sshd": (s1 - s0) / CLK, "ssh_masters": masters / CLK}

    def close_masters(self):
        for key in procs_with_arg(self.cp_dir):
            try:
                os.kill(key[0], signal.SIGTERM)
            except ProcessLookupError:
                pass
        wait_until(lambda: not procs_with_arg(self.cp_dir), 10, 0.05, "ssh masters gone")

    def stop_services(self):
        for r in self.roots:
            subprocess.run([f"{REPO}/demo/stop-service", r], capture_output=True, timeout=30)


class GantrySide:
    def __init__(self, env, work):
        self.env = env
        self.work = os.path.join(work, "gantry")
        self.keys = os.path.join(self.work, "keys")
        os.makedirs(self.keys)
        b = env.bin
        self.agent_bin = os.path.join(b, "agent", "gantry-agent")
        run_ok([env.coord_bin, "keygen", "--out", f"{self.keys}/coordinator"], "coordinator keygen")
        run_ok([env.cli, "keygen", "--out", f"{self.keys}/admin"], "gantry keygen")
        run_ok([env.cli, "release", "keygen", "--out", f"{self.keys}/release"], "release keygen")
        self.ports = [free_port() for _ in range(N_HOSTS)]
        self.hosts = [f"host-{i + 1:02d}" for i in range(N_HOSTS)]
        self.roots = []
        self.agents = []
        for i, h in enumerate(self.hosts):
            d = os.path.join(self.work, h)
            os.makedirs(os.path.join(d, "state"))
            os.makedirs(os.path.join(d, "demo"))
            self.roots.append(os.path.join(d, "demo"))
            run_ok([self.agent_bin, "keygen", "--out", f"{d}/agent"], "agent keygen")
        self.cli_env = dict(os.environ, GANTRY_KEY=f"{self.keys}/admin.key",
                            GANTRY_COORDINATOR_KEY=f"{self.keys}/coordinator.pub",
                            GANTRY_COORDINATOR=f"tcp://127.0.0.1:{env.op_port}")

    def start(self):
        env = self.env
        state = env.coord_state
        argv = [env.coord_bin, "--state-dir", state, "--server-key", f"{self.keys}/coordinator.key",
                "--admin-key", f"admin={self.keys}/admin.pub",
                "--agent-endpoint", f"tcp://127.0.0.1:{env.agent_port}",
                "--pub-endpoint", f"tcp://127.0.0.1:{env.pub_port}",
                "--operator-endpoint", f"tcp://127.0.0.1:{env.op_port}", "--http-address", "",
                "--log-level", env.args.coord_log_level]
        for i, h in enumerate(self.hosts):  # enrolled keys: each agent's own public key, pre-accepted
            argv += ["--accept-agent-key", f"{h}={self.work}/{h}/agent.pub"]
        env.coord_log = os.path.join(self.work, "coordinator.log")
        env.coord = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(env.coord_log, "w"))
        env.coord_pid = env.coord.pid
        ep = os.path.join(state, "endpoints.json")
        wait_until(lambda: os.path.exists(ep) or env.coord.poll() is not None, 60, 0.05, "coordinator endpoints.json")
        if env.coord.poll() is not None:
            raise RuntimeError("coordinator exited:\n" + open(env.coord_log).read()[-3000:])
        for i, h in enumerate(self.hosts):
            d = os.path.join(self.work, h)
            conf = os.path.join(d, "agent.conf")
            with open(conf, "w") as f:
                f.write(f"""host_id = {h}
coordinator = tcp://127.0.0.1:{env.agent_port}
coordinator_pub = tcp://127.0.0.1:{env.pub_port}
state_dir = {d}/state
agent_key = {d}/agent.key
coordinator_key = {self.keys}/coordinator.pub
release_public_key = {self.keys}/release.pub
label = role=web
[service.demo]
driver = binary
root = {self.roots[i]}
restart_command = {REPO}/demo/restart-service {self.roots[i]} {self.ports[i]}
http_probe = http://127.0.0.1:{self.ports[i]}/health
probe_interval_ms = 100
min_healthy_ms = 0
healthy_deadline_ms = 15000
""")
            self.agents.append(subprocess.Popen([self.agent_bin, "--config", conf], stdout=subprocess.DEVNULL,
                                                stderr=open(os.path.join(d, "agent.log"), "w")))
        wait_until(self.all_online, 60, 0.2, f"{N_HOSTS} agents online")

    def gantry(self, *args, timeout=60):
        return run_ok([self.env.cli] + list(args), "gantry " + " ".join(args[:2]), timeout, env=self.cli_env)

    def all_online(self):
        import json
        try:
            hosts = json.loads(self.gantry("--json", "hosts"))["hosts"]
        except (RuntimeError, ValueError):
            return False
        return sum(1 for h in hosts if h["online"]) == N_HOSTS

    def sign(self, tar, version):
        self.gantry("release", "sign", "--key", f"{self.keys}/release.key", tar, "--service", "demo", "--version", version)

    def roll(self, version, tar, log, batches=str(BATCH), timeout=300):
        """`gantry rollout start ... --wait`: returns (ok, wall s, CPU s)."""
        pids = [self.env.coord_pid] + [a.pid for a in self.agents]
        c0 = tree_ticks(pids)
        argv = [self.env.cli, "rollout", "start", "--service", "demo", "--version", version, "--release", tar,
                "--batches", batches, "--min-healthy-time", "0s", "--max-failures", "0", "--reason", "bench",
                "--wait"]
        rc, wall, cpu = timed_run(argv, timeout, env=self.cli_env, log=log)
        c1 = tree_ticks(pids)
        return rc == 0, wall, cpu + (c1 - c0) / CLK, {"cli": cpu, "coordinator+agents": (c1 - c0) / CLK}

    def stop(self):
        for a in self.agents:
            if a.poll() is None:
                a.terminate()
        for a in self.agents:
            try:
                a.wait(10)
            except subprocess.TimeoutExpired:
                a.kill()
                a.wait(5)
        for r in self.roots:
            subprocess.run([f"{REPO}/demo/stop-service", r], capture_output=True, timeout=30)


def make_release(work, bin_dir, version):
    tar = os.path.join(work, "releases", f"demo-{version}.tar")
    run_ok([f"{REPO}/scripts/make-demo-release", "--version", version, "--behaviour", "healthy", "--out", tar,
            "--binary", os.path.join(bin_dir, "demo", "gantry-demo-service")], "make-demo-release")
    return tar


def run(args):
    if os.geteuid() != 0:
        print("bench ansible: must run as root (installs packages, runs sshd)", file=sys.stderr)
        return 2
    ensure_packages()
    rounds = max(1, args.rounds)
    env = Env(args, "ansible")
    sshd = ans = gan = None
    try:
        work = env.work
        os.makedirs(os.path.join(work, "releases"))
        logs = os.path.join(work, "logs")
        os.makedirs(logs)
        sshd = Sshd(work)
        ans = AnsibleSide(work, sshd)
        gan = GantrySide(env, work)
        gan.start()
        # v1 is the first install (all hosts at once for Gantry), v2 the warm-up round, then
        # `rounds` measured rounds of fresh versions.
        versions = [f"v{k}" for k in range(1, rounds + 3)]
        tars = {}
        for v in versions:
            tars[v] = make_release(work, env.bin, v)
            gan.sign(tars[v], v)
        results = []
        for k, v in enumerate(versions):
            measured = k >= 2
            label = "measured" if measured else ("first install" if k == 0 else "warm-up")
            a_ok, a_wall, a_cpu, a_parts = ans.roll(v, tars[v], os.path.join(logs, f"ansible-{v}.log"))
            a_bad = check_versions(ans.ports, v)
            g_ok, g_wall, g_cpu, g_parts = gan.roll(v, tars[v], os.path.join(logs, f"gantry-{v}.log"),
                                                    batches="100%" if k == 0 else str(BATCH))
            g_bad = check_versions(gan.ports, v)
            print(f"{v} ({label}): ansible {'ok' if a_ok else 'FAILED'} {a_wall:.2f} s wall {a_cpu:.2f} s CPU "
                  f"{ {x: round(y, 2) for x, y in a_parts.items()} }; gantry {'ok' if g_ok else 'FAILED'} "
                  f"{g_wall:.2f} s wall {g_cpu:.2f} s CPU { {x: round(y, 2) for x, y in g_parts.items()} }", flush=True)
            if not a_ok or a_bad:
                raise RuntimeError(f"ansible round {v} failed (hosts not on {v}: {a_bad}); see "
                                   + open(os.path.join(logs, f"ansible-{v}.log")).read()[-3000:])
            if not g_ok or g_bad:
                raise RuntimeError(f"gantry round {v} failed (hosts not on {v}: {g_bad}): "
                                   + open(os.path.join(logs, f"gantry-{v}.log")).read()[-3000:])
            if measured:
                results.append((a_wall, a_cpu, g_wall, g_cpu))
        med = lambda i: statistics.median(r[i] for r in results)
        a_wall, a_cpu, g_wall, g_cpu = med(0), med(1), med(2), med(3)
        wr, cr = a_wall / g_wall, a_cpu / max(g_cpu, 1e-3)
        per = "; ".join(f"{a:.1f}/{b:.2f} s wall, {c:.1f}/{d:.2f} s CPU" for a, c, b, d in results)
        rows = [(f"rolling update, {N_HOSTS} hosts, batches of {BATCH}: wall (s, median of {len(results)})",
                 f"{g_wall:.2f}", f"{a_wall:.2f} (Ansible)", f"{wr:.1f}x faster", "≥ 20x", wr >= 20),
                ("… CPU seconds of the tool's own processes (median)", f"{g_cpu:.2f}", f"{a_cpu:.2f} (Ansible)",
                 f"{cr:.1f}x less", "≥ 20x", cr >= 20)]
        ver = subprocess.run(["ansible-playbook", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        record("ansible", "7. Against Ansible (20 hosts, rolling update in batches of 5)",
               f"bench/run ansible --rounds {rounds}", rows,
               f"Per measured round (Ansible/Gantry): {per}. Every round rolls a new version (copy + extract + symlink "
               f"swap + restart + HTTP check of the new version on each host), after a first install and a warm-up round. "
               f"Gantry: coordinator + {N_HOSTS} gantry-agent processes on loopback, CURVE on, agent keys enrolled "
               f"(--accept-agent-key), releases signed (ed25519), binary driver, `gantry rollout start --release TAR "
               f"--batches {BATCH} --min-healthy-time 0s --wait` (upload included; ends when the rollout succeeded); the "
               f"agent's probe is the service's /health (while the service starts: after 10 ms, doubling up to the 100 ms "
               f"probe interval), healthy on the first success. Ansible: {ver.strip()} "
               f"(Debian), `ansible-playbook bench/ansible/rolling-update.yml` (serial: 5, forks 5, file + unarchive + "
               f"file link + command + uri until /version answers the new version, retries 50, delay 0) over SSH to a "
               f"private sshd on 127.0.0.1 (key auth, UsePAM no); Debian defaults (ControlMaster=auto, ControlPersist=60s) "
               f"plus pipelining = True (the documented speed-up), gather_facts off and ansible_python_interpreter set "
               f"(both in Ansible's favour); all 20 inventory hosts are 127.0.0.1 on one port, so they share one SSH "
               f"master connection (also in Ansible's favour); masters are closed between rounds. Both tools run the same "
               f"restart command (demo/restart-service) and the same tarballs; each host has its own install root and port; "
               f"every host's /version is checked after each round. CPU: long-lived processes (coordinator, agents, sshd "
               f"and its per-connection children, ssh ControlPersist masters) as /proc/PID/stat utime+stime+cutime+cstime "
               f"summed over the process tree, before → after; short-lived commands (ansible-playbook with its forks and "
               f"ssh clients, the gantry CLI) by os.wait4 rusage; the services (setsid, orphaned) are not counted on "
               f"either side; the restart command is counted on both.")
        return 0
    finally:
        if ans:
            try:
                ans.close_masters()
            except Exception:
                pass
            ans.stop_services()
        if gan:
            gan.stop()
        if sshd:
            sshd.stop()
        env.close()
