#!/usr/bin/python3
"""PROTOCOL.md, checked by speaking it: this test reads the examples out of PROTOCOL.md itself
(fenced blocks labelled ```json example=NAME, and the hex line of §2's byte-level example),
encodes them as the document says (one msgpack map per ZeroMQ frame, CURVE keys as Z85 files)
and speaks them to a real gantry-coordinator over real sockets, as an agent (DEALER + SUB, and a
heartbeat datagram) and as an operator (DEALER). Every answer is compared with the document's
example of it: the same fields, and the same values except where the example writes a
placeholder ("<uint>", "<int>", "<str>", "<bin>", "<any>"). It shares no code with Gantry: a
second ZeroMQ binding (python3-zmq) and a second msgpack (python3-msgpack), both from Debian.

  protocol_doc_test.py BUILD_DIR SOURCE_DIR

Every wait is bounded; the coordinator and the temp dir are removed at exit, also on failure.
Exit 0 when every check passed; 1 with the failed checks listed otherwise.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

try:
    import msgpack
    import zmq
except ImportError as e:  # scripts/install-deps installs both
    print(f"protocol_doc_test: {e}: install python3-zmq and python3-msgpack (scripts/install-deps)")
    sys.exit(1)

BUILD, SOURCE = sys.argv[1], sys.argv[2]
TIMEOUT_MS = 15000
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


# ---- the document's examples --------------------------------------------------------------

DOC = open(os.path.join(SOURCE, "PROTOCOL.md"), encoding="utf-8").read()
EXAMPLES = {m.group(1): m.group(2) for m in
            re.finditer(r"^```json example=([a-z0-9-]+)\n(.*?)^```", DOC, re.S | re.M)}


def example(name):
    """The example's JSON, with "bin:HEX" strings turned into bytes (msgpack bin)."""
    if name not in EXAMPLES:
        raise SystemExit(f"PROTOCOL.md has no example labelled {name}")
    return to_wire(json.loads(EXAMPLES[name]))


def to_wire(v):
    if isinstance(v, str) and v.startswith("bin:"):
        return bytes.fromhex(v[4:])
    if isinstance(v, dict):
        return {k: to_wire(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_wire(x) for x in v]
    return v


PLACEHOLDERS = {
    "<uint>": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "<int>": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "<str>": lambda v: isinstance(v, str),
    "<bin>": lambda v: isinstance(v, bytes),
    "<any>": lambda v: True,
}


def mismatches(want, got, path="", exact_keys=True):
    """Where `got` differs from the example `want`: placeholders match by type; maps must have
    exactly the example's keys (exact_keys) or at least them (operator results, which may
    gain fields: docs/CLI.md)."""
    out = []
    if isinstance(want, str) and want in PLACEHOLDERS:
        if not PLACEHOLDERS[want](got):
            out.append(f"{path}: {got!r} is not {want}")
    elif isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: {got!r} is not a map"]
        for k, v in want.items():
            if k not in got:
                out.append(f"{path}.{k}: missing")
            else:
                out += mismatches(v, got[k], f"{path}.{k}", exact_keys)
        if exact_keys:
            out += [f"{path}.{k}: not in the document's example" for k in got if k not in want]
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} is not a list of {len(want)}"]
        for i, (w, g) in enumerate(zip(want, got)):
            out += mismatches(w, g, f"{path}[{i}]", exact_keys)
    elif type(want) is not type(got) or want != got:
        out.append(f"{path}: {got!r}, the document says {want!r}")
    return out


def shape_mismatches(want, got, path=""):
    """For §6's illustrative shapes: every field of the example is there, of the same kind."""
    out = []
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: not a map"]
        for k, v in want.items():
            if k not in got:
                out.append(f"{path}.{k}: missing")
            else:
                out += shape_mismatches(v, got[k], f"{path}.{k}")
    elif isinstance(want, list) and want:
        if not isinstance(got, list):
            return [f"{path}: not a list"]
        for i, g in enumerate(got):
            out += shape_mismatches(want[0], g, f"{path}[{i}]")
    elif isinstance(want, bool) != isinstance(got, bool) or (
            isinstance(want, (int, float)) and not isinstance(got, (int, float))) or (
            isinstance(want, str) and not isinstance(got, str)):
        out.append(f"{path}: {got!r} is not like {want!r}")
    return out


def expect(name, msg, exact_keys=True):
    bad = mismatches(example(name), msg, name, exact_keys)
    check(not bad, f"example {name}: " + "; ".join(bad) + f"\n    got {msg!r}")


def pack(m):
    return msgpack.packb(m, use_bin_type=True)


def unpack(frame):
    return msgpack.unpackb(frame, raw=False, strict_map_key=False)


# ---- processes, keys and sockets -------------------------------------------------------------

tmp = tempfile.mkdtemp(prefix="gantry-protocol-doc-")
coordinator = None


def cleanup():
    if coordinator and coordinator.poll() is None:
        coordinator.kill()
        coordinator.wait(timeout=10)
    if os.environ.get("GANTRY_KEEP_TEST_DIRS") == "1":
        print("kept", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stdout}{r.stderr}")


def z85(path):
    return open(path, "rb").read().strip()


def coordinator_log():
    try:
        return open(os.path.join(tmp, "coordinator.log"), errors="replace").read()[-6000:]
    except OSError:
        return ""


ctx = zmq.Context()


def curve(sock, prefix):
    sock.curve_secretkey = z85(prefix + ".key")
    sock.curve_publickey = z85(prefix + ".pub")
    sock.curve_serverkey = z85(os.path.join(tmp, "coordinator.pub"))
    sock.linger = 0


def recv(sock, what, timeout_ms=TIMEOUT_MS, want=None):
    """The next message (decoded) on sock for which want(msg) holds; frames of other messages
    are skipped. Fails the test (and exits) when none comes in time."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0 or not sock.poll(left):
            raise SystemExit(f"no {what} within {timeout_ms} ms\n--- coordinator log ---\n{coordinator_log()}")
        frames = sock.recv_multipart()
        check(len(frames) == 1, f"{what}: one frame per message (§2), got {len(frames)}")
        m = unpack(frames[-1])
        if want is None or want(m):
            return m


def main():
    global coordinator
    # Keys as §9.1 says: Z85 text, one per file, PREFIX.key and PREFIX.pub.
    run([f"{BUILD}/coordinator/gantry-coordinator", "keygen", "--out", f"{tmp}/coordinator"])
    run([f"{BUILD}/agent/gantry-agent", "keygen", "--out", f"{tmp}/agent"])
    run([f"{BUILD}/agent/gantry-agent", "keygen", "--out", f"{tmp}/stranger"])
    run([f"{BUILD}/cli/gantry", "keygen", "--out", f"{tmp}/admin"])
    for p in ("coordinator", "agent", "admin"):
        check(len(z85(f"{tmp}/{p}.pub")) == 40, f"§9.1: {p}.pub is 40 characters of Z85")
    state = os.path.join(tmp, "state")
    # Every setting at its default (the examples show the defaults), ports chosen by the kernel.
    coordinator = subprocess.Popen(
        [f"{BUILD}/coordinator/gantry-coordinator", "--state-dir", state,
         "--agent-endpoint", "tcp://127.0.0.1:*", "--pub-endpoint", "tcp://127.0.0.1:*",
         "--operator-endpoint", "tcp://127.0.0.1:*", "--http-address", "127.0.0.1:0",
         "--server-key", f"{tmp}/coordinator.key", "--admin-key", f"admin={tmp}/admin.pub",
         "--accept-agent-key", f"web-1={tmp}/agent.pub"],
        stdout=open(os.path.join(tmp, "coordinator.log"), "w"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    # §1: the endpoints it bound, in <state-dir>/endpoints.json.
    ep = None
    for _ in range(200):
        try:
            ep = json.load(open(os.path.join(state, "endpoints.json")))
            break
        except (OSError, ValueError):
            if coordinator.poll() is not None:
                raise SystemExit("the coordinator exited:\n" + coordinator_log())
            time.sleep(0.05)
    if ep is None:
        raise SystemExit("no endpoints.json within 10 s:\n" + coordinator_log())
    check(set(ep) >= {"agent", "pub", "operator", "http", "udp_heartbeat"}, f"§1 endpoints.json keys: {ep}")

    # ---- §2: the byte-level example is what msgpack makes of {"t":3,"b":{"seq":1}} --------
    hexline = re.search(r"^hex: ([0-9a-f]+)$", DOC, re.M)
    check(hexline and bytes.fromhex(hexline.group(1)) == pack({"t": 3, "b": {"seq": 1}}),
          "§2 byte-level example is the msgpack of Heartbeat{seq: 1}")

    # ---- operator socket -----------------------------------------------------------------
    op = ctx.socket(zmq.DEALER)
    curve(op, f"{tmp}/admin")
    op.connect(ep["operator"])

    def request(name, **replace):
        """Sends example NAME (its args updated by `replace`) and returns the OpReply."""
        m = example(name)
        m["b"]["args"].update(replace)
        op.send(pack(m))
        reply = recv(op, f"reply to {name}")
        check(reply.get("t") == 13 and reply["b"].get("request_id") == m["b"]["request_id"],
              f"{name}: an OpReply with the request's id: {reply!r}")
        return reply

    # ---- §5.1 a non-hello before hello gets hello_required; then hello -> welcome ---------
    agent = ctx.socket(zmq.DEALER)
    curve(agent, f"{tmp}/agent")
    agent.connect(ep["agent"])
    sub = ctx.socket(zmq.SUB)
    curve(sub, f"{tmp}/agent")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub_events = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sub.connect(ep["pub"])

    agent.send(bytes.fromhex(hexline.group(1)))  # §2's exact bytes, before any hello
    expect("hello-required", recv(agent, "hello_required"))

    agent.send(pack(example("hello")))
    welcome = recv(agent, "welcome", want=lambda m: m.get("t") != 3)
    expect("welcome", welcome)
    check(len(welcome["b"].get("udp_key", b"")) == 32, "§4.2 udp_key is 32 bytes")

    # ---- the SUB is handshaken: report it (§4.3 signal_channel) --------------------------
    if not sub_events.poll(TIMEOUT_MS):
        raise SystemExit("the SUB's handshake did not succeed:\n" + coordinator_log())
    sub_events.recv_multipart()
    agent.send(pack(example("heartbeat")))

    # ---- §5.7 one heartbeat datagram; the coordinator confirms it on the connection ------
    w = welcome["b"]
    head = b"GHB\x01" + struct.pack(">I", w["udp_session"]) + struct.pack(">Q", 1)
    mac = hashlib.blake2b(head, digest_size=16, key=w["udp_key"]).digest()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(head + mac, ("127.0.0.1", w["udp_port"]))
    expect("heartbeat-udp-confirmed",
           recv(agent, "Heartbeat{udp_seq}", want=lambda m: m.get("t") == 3 and "udp_seq" in m["b"]))
    udp.close()

    # ---- §6 release.upload and rollout.start; §5.3 the order end to end ------------------
    expect("op-release-upload-reply", request("op-release-upload"), exact_keys=False)
    # A peer coordinator: the coordinator's own keypair on the operator socket (§6, §9.1).
    peer = ctx.socket(zmq.DEALER)
    curve(peer, f"{tmp}/coordinator")
    peer.connect(ep["operator"])
    peer.send(pack(example("op-artifact-chunk")))
    expect("op-artifact-chunk-reply", recv(peer, "reply to op-artifact-chunk"))
    refused = example("op-rollout-start")
    refused["b"]["request_id"] = "p2"
    peer.send(pack(refused))
    expect("op-peer-refused-reply", recv(peer, "reply to the peer's rollout.start"))
    peer.close()
    expect("op-rollout-start-reply", request("op-rollout-start"), exact_keys=False)
    order = recv(agent, "order", want=lambda m: m.get("t") == 4)
    expect("order", order)
    agent.send(pack(example("order-ack")))
    agent.send(pack(example("fetch-chunk")))
    expect("chunk", recv(agent, "chunk", want=lambda m: m.get("t") == 7))
    for phase in ("fetching", "staging", "swapping", "restarting"):
        p = example("progress-verifying")
        p["b"].update(phase=phase, detail=phase, at_ms=p["b"]["at_ms"] - 100)
        agent.send(pack(p))
    agent.send(pack(example("progress-verifying")))
    # §4.8: the coordinator shows the phase on the host while the order runs.
    reply = None
    for _ in range(100):
        reply = request("op-hosts")
        svc = reply["b"]["result"]["hosts"][0]["services"][0] if reply["b"].get("ok") else {}
        if svc.get("phase") == "verifying":
            break
        time.sleep(0.05)
    expect("op-hosts-reply-verifying", reply, exact_keys=False)
    agent.send(pack(example("report")))
    for _ in range(100):
        reply = request("op-rollout-get")
        if reply["b"].get("ok") and reply["b"]["result"].get("phase") != "running":
            break
        time.sleep(0.05)
    expect("op-rollout-get-reply", reply, exact_keys=False)
    # §6's illustrative shapes: every field they show is there.
    view = reply["b"].get("result") or {}
    bad = shape_mismatches(json.loads(EXAMPLES["rollout-view"]), view, "rollout-view")
    check(not bad, "§6 rollout view shape: " + "; ".join(bad))
    hosts = request("op-hosts")["b"].get("result") or {}
    bad = shape_mismatches(json.loads(EXAMPLES["host"]), (hosts.get("hosts") or [{}])[0], "host")
    check(not bad, "§6 host shape: " + "; ".join(bad))
    check((hosts.get("hosts") or [{}])[0].get("signal_channel") == "up",
          f"§4.3: the heartbeat's signal_channel is shown: {hosts!r}")

    # ---- a second revision, then the operator's rollback (§5.6) and its abort Signal ------
    art2 = b"web 2.4.2\n"
    sha2 = hashlib.sha256(art2).hexdigest()
    expect("op-release-upload-reply",
           request("op-release-upload", version="2.4.2", sha256=sha2, size=len(art2), data=art2), exact_keys=False)
    r2 = request("op-rollout-start", version="2.4.2")
    check(r2["b"].get("ok"), f"second rollout: {r2!r}")
    o2 = recv(agent, "order of rollout 2", want=lambda m: m.get("t") == 4)
    agent.send(pack({"t": 5, "b": {"order_id": o2["b"]["order_id"], "status": "accepted", "message": ""}}))
    rep = example("report")
    rep["b"].update(order_id=o2["b"]["order_id"], rollout_id=o2["b"]["rollout_id"], running_version="2.4.2")
    agent.send(pack(rep))
    for _ in range(100):
        if (request("op-rollout-get", id=o2["b"]["rollout_id"])["b"].get("result") or {}).get("phase") == "succeeded":
            break
        time.sleep(0.05)
    expect("op-rollback-reply", request("op-rollback"), exact_keys=False)
    expect("order-rollback", recv(agent, "the rollback's order", want=lambda m: m.get("t") == 4))
    ack = example("order-ack")
    ack["b"]["order_id"] = example("order-rollback")["b"]["order_id"]
    agent.send(pack(ack))
    request("op-rollout-abort")
    expect("signal", recv(sub, "the abort Signal"))
    expect("op-history-reply", request("op-history"), exact_keys=False)

    # ---- §6 errors ------------------------------------------------------------------------
    expect("op-unknown-command-reply", request("op-unknown-command"))
    op.send(b"\xc1")  # never valid msgpack
    bad = recv(op, "reply to an undecodable frame")
    check(bad["t"] == 13 and bad["b"]["request_id"] == "" and bad["b"]["ok"] is False and
          bad["b"]["error"].startswith("bad request: ") and bad["b"]["result"] is None,
          f"§6 undecodable frame: {bad!r}")

    # ---- §9.2 a key nobody accepted: refused at the handshake, recorded as pending -------
    stranger = ctx.socket(zmq.DEALER)
    curve(stranger, f"{tmp}/stranger")
    events = stranger.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    stranger.connect(ep["agent"])
    hello = example("hello")
    hello["b"]["host_id"] = "web-9"
    stranger.send(pack(hello))
    check(events.poll(TIMEOUT_MS), "§9.2 an unknown key's handshake ends (refused)")
    ev = struct.unpack("<H", events.recv_multipart()[0][:2])[0]
    check(ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH, f"§9.2 an unknown key's handshake is refused (event {ev})")
    check(not stranger.poll(1000), "§9.2 a refused key gets no answer")
    keys = request("op-keys-list")["b"].get("result") or {}
    stranger_key = z85(f"{tmp}/stranger.pub").decode()
    rows = [k for k in keys.get("agents", []) if k.get("key") == stranger_key]
    check(rows and rows[0].get("state") == "pending" and rows[0].get("host_id") == "",
          f"§9.2 the refused key is pending and names no host: {rows!r}")

    for s in (stranger, events, sub_events, sub, agent, op):
        s.close(linger=0)


try:
    main()
except SystemExit as e:
    if e.code not in (None, 0):
        failures.append(str(e.code))
        print("FAIL:", e.code, flush=True)
finally:
    cleanup()
    ctx.destroy(linger=0)

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("every example in PROTOCOL.md answered as documented")
