#!/usr/bin/python3
"""A hostile Gantry peer for the security tests, written against PROTOCOL.md with a second
ZeroMQ binding (Debian's python3-zmq) and a hand-written msgpack encoder: it shares no code with
Gantry. Every wait is bounded. Prints one JSON object with what it saw; exit 0 unless it broke.

  hostile_client.py MODE --endpoint E [--server-key PUBFILE] [--key SECRETFILE] [...]
"""
import argparse
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time

import zmq

# ---- msgpack (just what we need) ---------------------------------------------------------

def mp(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        return b"\xcf" + struct.pack(">Q", v)
    if isinstance(v, str):
        b = v.encode(errors="surrogateescape")  # "\udcff" is the byte 0xff: text that is not UTF-8
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(v, bytes):
        return b"\xc6" + struct.pack(">I", len(v)) + v
    if isinstance(v, list):
        return b"\xdd" + struct.pack(">I", len(v)) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return b"\xdf" + struct.pack(">I", len(v)) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(type(v))


def envelope(t, body):
    return mp({"t": t, "b": body})


def unmp(b, i=0):
    """Decodes one msgpack value (enough for Gantry's replies); returns (value, next index)."""
    c = b[i]
    if c <= 0x7f:
        return c, i + 1
    if 0x80 <= c <= 0x8f or c in (0xde, 0xdf):
        if c <= 0x8f:
            n, i = c & 0x0f, i + 1
        elif c == 0xde:
            n, i = struct.unpack(">H", b[i + 1:i + 3])[0], i + 3
        else:
            n, i = struct.unpack(">I", b[i + 1:i + 5])[0], i + 5
        d = {}
        for _ in range(n):
            k, i = unmp(b, i)
            v, i = unmp(b, i)
            d[k] = v
        return d, i
    if 0x90 <= c <= 0x9f or c in (0xdc, 0xdd):
        if c <= 0x9f:
            n, i = c & 0x0f, i + 1
        elif c == 0xdc:
            n, i = struct.unpack(">H", b[i + 1:i + 3])[0], i + 3
        else:
            n, i = struct.unpack(">I", b[i + 1:i + 5])[0], i + 5
        out = []
        for _ in range(n):
            v, i = unmp(b, i)
            out.append(v)
        return out, i
    if 0xa0 <= c <= 0xbf or c in (0xd9, 0xda, 0xdb):
        if c <= 0xbf:
            n, i = c & 0x1f, i + 1
        elif c == 0xd9:
            n, i = b[i + 1], i + 2
        elif c == 0xda:
            n, i = struct.unpack(">H", b[i + 1:i + 3])[0], i + 3
        else:
            n, i = struct.unpack(">I", b[i + 1:i + 5])[0], i + 5
        return b[i:i + n].decode(errors="replace"), i + n
    if c in (0xc4, 0xc5, 0xc6):
        w = {0xc4: 1, 0xc5: 2, 0xc6: 4}[c]
        n = int.from_bytes(b[i + 1:i + 1 + w], "big")
        i += 1 + w
        return b[i:i + n], i + n
    if c == 0xc0:
        return None, i + 1
    if c == 0xc2:
        return False, i + 1
    if c == 0xc3:
        return True, i + 1
    if c in (0xcc, 0xcd, 0xce, 0xcf):
        w = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[c]
        return int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w
    if c >= 0xe0:
        return c - 256, i + 1
    raise ValueError("unsupported msgpack byte %#x" % c)


def decode(frame):
    try:
        v, _ = unmp(frame)
        return v
    except Exception as e:  # a reply we cannot parse is itself a finding
        return {"undecodable": str(e)}


HELLO, WELCOME, HEARTBEAT, ORDER, ORDER_ACK, FETCH, CHUNK, PROGRESS, REPORT, ERROR, SIGNAL, OPREQ, OPREP = range(1, 14)

# ---- sockets ---------------------------------------------------------------------------------

def read_key(path):
    with open(path) as f:
        return f.read().strip().encode()


PUBLIC_KEYS = {}


def client(ctx, kind, endpoint, server_key=None, secret=None):
    s = ctx.socket(kind)
    s.linger = 0
    if server_key:
        if secret is None:
            pub, sec = zmq.curve_keypair()
        else:
            sec = read_key(secret)
            pub = zmq.curve_public(sec)
        s.curve_serverkey = read_key(server_key)
        s.curve_publickey = pub
        s.curve_secretkey = sec
        PUBLIC_KEYS[id(s)] = pub.decode()
    s.connect(endpoint)
    return s


def recv_all(s, timeout_ms, want=None):
    """Frames received within timeout_ms (stops early once `want(msg)` is true)."""
    out = []
    deadline = time.monotonic() + timeout_ms / 1000.0
    while True:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0 or not s.poll(left):
            return out
        m = decode(s.recv())
        out.append(m)
        if want and want(m):
            return out


def is_type(t):
    return lambda m: isinstance(m, dict) and m.get("t") == t


def hello(host):
    return envelope(HELLO, {"protocol_version": 1, "host_id": host, "agent_version": "hostile",
                            "labels": {}, "services": []})


def op_request(command, args=None, rid="h-1"):
    return envelope(OPREQ, {"request_id": rid, "command": command, "args": args or {}})

# ---- modes -----------------------------------------------------------------------------------

def mode_plaintext(ctx, a):
    """No CURVE at all: the coordinator must not answer on either socket."""
    res = {}
    op = client(ctx, zmq.DEALER, a.endpoint)
    op.send(op_request("hosts"))
    res["operator_replies"] = len(recv_all(op, a.wait_ms))
    if a.agent_endpoint:
        ag = client(ctx, zmq.DEALER, a.agent_endpoint)
        ag.send(hello("plain-host"))
        res["agent_replies"] = len(recv_all(ag, a.wait_ms))
    return res


def mode_unknown_operator(ctx, a):
    """CURVE with a key the coordinator never heard of: ZAP refuses, nothing comes back."""
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key)
    s.send(op_request("hosts"))
    return {"replies": len(recv_all(s, a.wait_ms))}


def handshake_events(ctx, s, wait_ms):
    """Watches socket s until its CURVE handshake succeeds or is refused (or wait_ms pass)."""
    ep = "inproc://hostile-monitor-%d" % id(s)
    s.monitor(ep, zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH |
              zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    m = ctx.socket(zmq.PAIR)
    m.linger = 0
    m.connect(ep)
    return m


def monitor_result(m, wait_ms):
    seen = {"succeeded": 0, "refused": 0, "failed": 0}
    deadline = time.monotonic() + wait_ms / 1000.0
    while time.monotonic() < deadline and not (seen["succeeded"] or seen["refused"]):
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0 or not m.poll(left):
            break
        frames = m.recv_multipart()
        ev = struct.unpack("=H", frames[0][:2])[0]
        if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            seen["succeeded"] += 1
        elif ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            seen["refused"] += 1
        else:
            seen["failed"] += 1
    return seen


def mode_pending_agent(ctx, a):
    """A new agent key: refused at the handshake (recorded as pending); nothing it sends arrives."""
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    mon = handshake_events(ctx, s, a.wait_ms)
    s.send(hello(a.host))
    handshake = monitor_result(mon, a.wait_ms)
    first = recv_all(s, a.wait_ms, lambda m: True)
    for m in (envelope(HEARTBEAT, {"seq": 1}), envelope(FETCH, {"sha256": "0" * 64, "offset": 0, "length": 16})):
        try:  # a refused handshake leaves no connection to queue on: never block
            s.send(m, zmq.NOBLOCK)
        except zmq.Again:
            pass
    later = recv_all(s, a.wait_ms)
    return {"key": PUBLIC_KEYS.get(id(s), ""), "handshake": handshake, "hello_reply": first, "later_replies": later}


def mode_endless_multipart(ctx, a):
    """A fresh key tries one message of --count 1 MiB frames, each with MORE set (finding 3 of
    issue 20). 'queued' counts the frames the local socket took (ZMQ_IMMEDIATE: only while it has
    a connection); none can leave it unless the handshake succeeded."""
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    s.immediate = True
    s.sndhwm = 0
    mon = handshake_events(ctx, s, a.wait_ms)
    handshake = monitor_result(mon, a.wait_ms)
    frame = b"\x00" * (1 << 20)
    queued = 0
    for _ in range(a.count):
        try:
            s.send(frame, zmq.SNDMORE | zmq.NOBLOCK)
            queued += 1
        except zmq.Again:
            break
    return {"key": PUBLIC_KEYS.get(id(s), ""), "handshake": handshake, "queued_frames": queued}


def still_open(c):
    """True if the server has not closed this connection (its greeting bytes are read and dropped)."""
    c.setblocking(False)
    try:
        for _ in range(64):
            if c.recv(65536) == b"":
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    return True


def mode_big_handshakes(ctx, a):
    """--count raw TCP connections, each sends a CURVE greeting and then all but the last byte of
    a handshake command of --frame-bytes (the largest frame the socket allows), and holds it until
    --release-file appears: the most memory a peer with no key can pin before the handshake ends.
    A frame larger than the socket allows is refused at once. Prints {"open": N} once every
    connection has sent; at the end, how many the server had not closed ("alive")."""
    host, port = a.endpoint.replace("tcp://", "").rsplit(":", 1)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\x00") + b"\x00" * 32
    body = b"\x05HELLO" + b"\x00" * (a.frame_bytes - 7)  # one byte short of the announced size
    socks = []
    failed = 0
    for _ in range(a.count):
        try:
            c = socket.create_connection((host, int(port)), timeout=3)
        except OSError:
            failed += 1
            continue
        try:
            c.sendall(greeting + b"\x06" + struct.pack(">Q", a.frame_bytes) + body)
        except OSError:
            failed += 1  # the server closed it while we sent: refused
        socks.append(c)
    print(json.dumps({"open": len(socks)}), flush=True)
    deadline = time.monotonic() + a.hold_s
    while time.monotonic() < deadline and not os.path.exists(a.release_file):
        time.sleep(0.05)
    alive = sum(1 for c in socks if still_open(c))
    for c in socks:
        c.close()
    return {"held": len(socks), "alive": alive, "failed_to_send": failed}


def mode_spoof(ctx, a):
    """An enrolled key (a.key) says hello as another host (a.host)."""
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    s.send(hello(a.host))
    return {"replies": recv_all(s, a.wait_ms, lambda m: True)}


def mode_revoke_operator(ctx, a):
    """One connection, two requests; between them an admin revokes this operator's key."""
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    s.send(op_request("hosts", rid="before"))
    before = recv_all(s, a.wait_ms, is_type(OPREP))
    r = subprocess.run(json.loads(a.revoke_cmd), capture_output=True, text=True, timeout=60)
    s.send(op_request("hosts", rid="after"))
    after = recv_all(s, a.wait_ms, is_type(OPREP))
    return {"before": before, "revoke_exit": r.returncode, "revoke_out": r.stdout + r.stderr, "after": after}


def mode_op_command(ctx, a):
    """One operator request: --command with --args (JSON), as the operator key --key."""
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    s.send(envelope(OPREQ, {"request_id": "h-1", "command": a.command, "args": json.loads(a.args)}))
    return {"replies": recv_all(s, a.wait_ms, is_type(OPREP))}


# Bytes that are not UTF-8, an OSC 52 clipboard write and a newline (a forged log line).
BAD_TEXT = "\udcff\udcfe\udcc3(\x1b]52;c;b3duZWQ=\x07\n2026-01-01 forged"


def mode_bad_text(ctx, a):
    """Finding 1 of issue 20: an enrolled agent key (--key) says hello with an agent_version that
    is not UTF-8 and lists service demo (labels role=rogue); an operator (--op-key) starts the
    rollout --args (reason: not UTF-8 either); the agent acknowledges its order and reports
    failure with a message that is not UTF-8. Prints what each step got back."""
    res = {}
    ag = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    svc = {"name": "demo", "current_version": "", "previous_version": "", "state": "idle", "order_id": ""}
    ag.send(envelope(HELLO, {"protocol_version": 1, "host_id": a.host, "agent_version": "hostile" + BAD_TEXT[:6],
                             "labels": {"role": "rogue"}, "services": [svc]}))
    res["welcome"] = bool(recv_all(ag, a.wait_ms, is_type(WELCOME)))
    op = client(ctx, zmq.DEALER, a.op_endpoint, a.server_key, a.op_key)
    args = json.loads(a.args)
    args["reason"] = "why" + BAD_TEXT
    op.send(op_request("rollout.start", args))
    rep = recv_all(op, a.wait_ms * 4, is_type(OPREP))
    res["start"] = {"ok": rep[-1]["b"].get("ok"), "error": rep[-1]["b"].get("error")} if rep else None
    orders = [m for m in recv_all(ag, a.wait_ms * 4, is_type(ORDER)) if is_type(ORDER)(m)]
    res["orders"] = len(orders)
    if orders:
        o = orders[-1]["b"]
        ag.send(envelope(ORDER_ACK, {"order_id": o["order_id"], "status": "accepted", "message": ""}))
        ag.send(envelope(REPORT, {"order_id": o["order_id"], "rollout_id": o["rollout_id"], "service": "demo",
                                  "outcome": "failed", "running_version": "", "message": "bad" + BAD_TEXT,
                                  "timings_ms": {"total": 1}}))
        # The coordinator goes on: a heartbeat is still answered on this connection.
        ag.send(envelope(HEARTBEAT, {"seq": 2}))
        res["after_report"] = len(recv_all(ag, a.wait_ms))
    return res


def mode_chunk_hog(ctx, a):
    """Finding 4 of issue 20: a stolen host key (--key, --host) asks for --count 1 MiB chunks of
    the artifact --sha256 and never reads them (a tiny receive buffer), until --release-file."""
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.rcvhwm = 1
    s.rcvbuf = 4096
    sec = read_key(a.key)
    s.curve_serverkey = read_key(a.server_key)
    s.curve_publickey = zmq.curve_public(sec)
    s.curve_secretkey = sec
    s.connect(a.endpoint)
    s.send(hello(a.host))
    welcomed = bool(recv_all(s, a.wait_ms, is_type(WELCOME)))
    for i in range(a.count):
        s.send(envelope(FETCH, {"sha256": a.sha256, "offset": i << 20, "length": 1 << 20}))
    print(json.dumps({"asked": a.count}), flush=True)
    deadline = time.monotonic() + a.hold_s
    while time.monotonic() < deadline and not os.path.exists(a.release_file):
        time.sleep(0.05)
    return {"welcome": welcomed, "asked": a.count}


def mode_revoke_agent(ctx, a):
    """An accepted agent is welcomed; an admin revokes its key; its next hello gets nothing."""
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    s.send(hello(a.host))
    before = recv_all(s, a.wait_ms, is_type(WELCOME))
    r = subprocess.run(json.loads(a.revoke_cmd), capture_output=True, text=True, timeout=60)
    s.send(hello(a.host))
    s.send(envelope(HEARTBEAT, {"seq": 2}))
    after = recv_all(s, a.wait_ms)
    return {"before": before, "revoke_exit": r.returncode, "revoke_out": r.stdout + r.stderr, "after": after}


def bombs():
    env = b"\x82\xa1t\x03\xa1b"  # {"t": 3, "b": <the bomb>}
    return {
        "array32_claim": env + b"\xdd\xff\xff\xff\xff" + b"\xc0" * 8,
        "map32_claim": env + b"\xdf\xff\xff\xff\xff" + b"\xa1k\xc0",
        "str32_claim": env + b"\xdb\xff\xff\xff\xf0" + b"abc",
        "bin32_claim": env + b"\xc6\xff\xff\xff\xf0" + b"abc",
        "ext_claim": env + b"\xc9\xff\xff\xff\xf0\x01abc",
        "deep_nesting": env + b"\x91" * 200000 + b"\xc0",
        "deep_maps": env + b"\x81\xa1k" * 50000 + b"\xc0",
        "wide_array": env + b"\xdd\x00\x02\x00\x00" + b"\xc0" * 0x20000,  # 131,072 > 100,000; 128 KiB
        "truncated": envelope(HELLO, {"protocol_version": 1, "host_id": "x"})[:-3],
        "trailing": envelope(HEARTBEAT, {"seq": 1}) + b"\xc0",
        "garbage": bytes(range(256)) * 16,
        "unknown_type": envelope(999, {}),
        "wrong_types": envelope(HELLO, {"protocol_version": "one", "host_id": 7, "labels": [], "services": {}}),
        "path_name": envelope(HELLO, {"protocol_version": 1, "host_id": "../../etc", "agent_version": "",
                                      "labels": {}, "services": []}),
    }


def mode_bombs(ctx, a):
    """Malformed and hostile frames from an enrolled key; each must be refused, the daemon serves on."""
    res = {}
    s = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    s.send(hello(a.host))
    res["welcome"] = bool(recv_all(s, a.wait_ms, is_type(WELCOME)))
    for name, frame in bombs().items():
        s.send(frame)
        got = recv_all(s, a.wait_ms, is_type(ERROR))
        errs = [m["b"].get("code") for m in got if isinstance(m, dict) and m.get("t") == ERROR]
        res[name] = errs[-1] if errs else None
    # Bigger than ZMQ_MAXMSGSIZE (256 KiB on the agent socket): libzmq drops the connection.
    s.send(b"\x00" * (3 * 1024 * 1024))
    res["oversized_reply"] = len(recv_all(s, 500))
    s.close()
    # A fresh connection with the same key is still served.
    s2 = client(ctx, zmq.DEALER, a.endpoint, a.server_key, a.key)
    s2.send(hello(a.host))
    res["welcome_after"] = bool(recv_all(s2, a.wait_ms * 4, is_type(WELCOME)))
    # And an operator frame bomb on the operator socket (with the admin key) is answered, not fatal.
    if a.op_endpoint and a.op_key:
        o = client(ctx, zmq.DEALER, a.op_endpoint, a.server_key, a.op_key)
        o.send(b"\x82\xa1t\x0c\xa1b" + b"\x91" * 100000 + b"\xc0")
        rep = recv_all(o, a.wait_ms, is_type(OPREP))
        res["operator_bomb"] = rep[-1]["b"].get("error", "")[:80] if rep else None
    return res


def mode_stall(ctx, a):
    """N raw TCP connections that never finish the ZMTP/CURVE handshake, held until a file appears."""
    host, port = a.endpoint.replace("tcp://", "").rsplit(":", 1)
    socks = []
    for i in range(a.count):
        c = socket.create_connection((host, int(port)), timeout=5)
        if i % 2:
            c.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f")  # the first bytes of a greeting, then silence
        socks.append(c)
    print(json.dumps({"open": len(socks)}), flush=True)
    deadline = time.monotonic() + a.hold_s
    while time.monotonic() < deadline and not os.path.exists(a.release_file):
        time.sleep(0.05)
    alive = 0
    for c in socks:
        c.setblocking(False)
        try:
            alive += c.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        c.close()
    return {"held": len(socks), "still_open_at_end": alive}


def mode_fake_coordinator(ctx, a):
    """Plays the coordinator (it holds the coordinator key): sends one Order twice, same id."""
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    s.curve_server = True
    s.curve_secretkey = read_key(a.key)
    s.bind(a.endpoint)
    order = json.load(open(a.order_file))
    deadline = time.monotonic() + a.hold_s
    ident = None
    while time.monotonic() < deadline and ident is None:
        if s.poll(100):
            frames = s.recv_multipart()
            m = decode(frames[-1]) if len(frames) == 2 else None
            if is_type(HELLO)(m) and m["b"].get("host_id") == a.host:  # other agents may knock too
                ident = frames[0]
            elif isinstance(m, dict) and not is_type(HELLO)(m):
                # As the real coordinator answers a peer it has not welcomed (it restarted): the
                # agent says hello at once instead of after its silence limit (misses x 10 s).
                s.send_multipart([frames[0], envelope(ERROR, {"code": "hello_required", "message": "say hello first",
                                                              "ref_type": m["t"], "ref_id": ""})])
    if ident is None:
        return {"error": "no hello"}
    s.send_multipart([ident, envelope(WELCOME, {"protocol_version": 1, "heartbeat_interval_ms": 200,
                                                 "heartbeat_misses": 50, "epoch": 99})])
    acks, reports = [], []
    for _ in range(2):
        s.send_multipart([ident, envelope(ORDER, order)])
        end = time.monotonic() + a.wait_ms / 1000.0
        while time.monotonic() < end:
            if not s.poll(50):
                continue
            frames = s.recv_multipart()
            m = decode(frames[-1])
            if is_type(ORDER_ACK)(m):
                acks.append(m["b"]["status"])
            elif is_type(REPORT)(m):
                reports.append(m["b"]["outcome"])
                break
    return {"acks": acks, "reports": reports}


def mode_heartbeats(ctx, a):
    """An agent at rest: hello (with --capabilities), then a Heartbeat every --interval-ms for
    --hold-s seconds. Reports the Welcome's periods and how many Heartbeats the coordinator sent."""
    if a.server_key:
        s = client(ctx, zmq.DEALER, a.agent_endpoint or a.endpoint, a.server_key, a.key)
    else:  # plaintext (--insecure-dev): the routing id names the host, as the real agent's does
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.routing_id = a.host.encode()
        s.connect(a.agent_endpoint or a.endpoint)
    body = {"protocol_version": 1, "host_id": a.host, "agent_version": "hostile", "labels": {}, "services": []}
    if a.capabilities:
        body["capabilities"] = a.capabilities
    s.send(envelope(HELLO, body))
    got = recv_all(s, a.wait_ms, is_type(WELCOME))
    welcome = next((m["b"] for m in got if is_type(WELCOME)(m)), None)
    if welcome is None:
        return {"welcome": None, "replies": got}
    beats, seq = 0, 0
    end = time.monotonic() + a.hold_s
    while time.monotonic() < end:
        seq += 1
        s.send(envelope(HEARTBEAT, {"seq": seq}))
        for m in recv_all(s, min(a.interval_ms, max(1, int((end - time.monotonic()) * 1000)))):
            beats += is_type(HEARTBEAT)(m)
    return {"welcome": welcome, "heartbeats_received": beats, "heartbeats_sent": seq}


def udp_datagram(session, seq, key, magic=b"GHB\x01"):  # b"GHC\x01": the coordinator's
    """PROTOCOL.md §5.7, written from the document: magic, session and seq big-endian, then
    BLAKE2b-128 of those 16 bytes keyed with the session key."""
    head = magic + struct.pack(">IQ", session, seq)
    return head + hashlib.blake2b(head, digest_size=16, key=key).digest()


def mode_udp_heartbeats(ctx, a):
    """An agent that heartbeats by UDP: hello with capability 2, then (in this order) a short
    datagram, one with a wrong magic, one for another session, one forged under another key,
    the first valid one (seq 1), its replay, and then valid ones every --interval-ms for
    --hold-s seconds with nothing sent on the connection. Then silence on both for --wait-ms:
    the coordinator should say udp_lost. Reports every message the coordinator sent."""
    if a.server_key:
        s = client(ctx, zmq.DEALER, a.agent_endpoint or a.endpoint, a.server_key, a.key)
    else:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.routing_id = a.host.encode()
        s.connect(a.agent_endpoint or a.endpoint)
    body = {"protocol_version": 1, "host_id": a.host, "agent_version": "hostile", "labels": {}, "services": [],
            "capabilities": 3}
    s.send(envelope(HELLO, body))
    got = recv_all(s, a.wait_ms, is_type(WELCOME))
    welcome = next((m["b"] for m in got if is_type(WELCOME)(m)), None)
    if welcome is None or not welcome.get("udp_session"):
        return {"welcome": None if welcome is None else {k: v for k, v in welcome.items() if k != "udp_key"}}
    session, key, port = welcome["udp_session"], welcome["udp_key"], welcome["udp_port"]
    host = (a.agent_endpoint or a.endpoint)[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    u = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((host, port))
    seen = []
    u.setblocking(False)
    cdg = {"ok": 0, "bad": 0, "last": 0}

    def coordinator_datagrams():
        while True:
            try:
                d = u.recv(64)
            except (BlockingIOError, ConnectionRefusedError):
                return
            sess, seq = struct.unpack(">IQ", d[4:16]) if len(d) == 32 else (0, 0)
            if (len(d) == 32 and d[:4] == b"GHC\x01" and sess == session and seq > cdg["last"]
                    and udp_datagram(session, seq, key, magic=b"GHC\x01") == d):
                cdg["ok"] += 1
                cdg["last"] = seq
            else:
                cdg["bad"] += 1

    def collect(ms):
        for m in recv_all(s, ms):
            if isinstance(m, dict) and isinstance(m.get("b"), dict):
                seen.append({"t": m.get("t"), **{k: v for k, v in m["b"].items() if isinstance(v, (int, str, bool))}})
        coordinator_datagrams()

    u.send(b"short")
    u.send(udp_datagram(session, 1, key, magic=b"XYZ\x01"))
    u.send(udp_datagram(session ^ 0x5A5A5A5A or 1, 1, key))
    u.send(udp_datagram(session, 1, bytes(32)))
    u.send(udp_datagram(session, 1, key))
    collect(200)
    u.send(udp_datagram(session, 1, key))  # replay
    seq = 1
    end = time.monotonic() + a.hold_s
    while time.monotonic() < end:
        seq += 1
        u.send(udp_datagram(session, seq, key))
        collect(a.interval_ms)
    collect(a.wait_ms)  # silence: expect udp_lost
    confirms = [m["udp_seq"] for m in seen if m["t"] == HEARTBEAT and m.get("udp_seq")]
    lost = sum(1 for m in seen if m["t"] == HEARTBEAT and m.get("udp_lost"))
    errors = [m.get("code") for m in seen if m["t"] == ERROR]
    first = next((i for i, m in enumerate(seen) if m["t"] == HEARTBEAT and m.get("udp_seq")), len(seen))
    last = next((i for i, m in enumerate(seen) if m["t"] == HEARTBEAT and m.get("udp_lost")), len(seen))
    plain = sum(1 for m in seen[first + 1:last] if m["t"] == HEARTBEAT and not m.get("udp_seq") and not m.get("udp_lost"))
    return {"session": session, "udp_port": port, "sent": seq, "confirms": confirms, "lost": lost, "errors": errors,
            "coordinator_datagrams": cdg["ok"], "coordinator_datagrams_bad": cdg["bad"],
            "zmtp_heartbeats_after_confirm": plain}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--agent-endpoint")
    p.add_argument("--op-endpoint")
    p.add_argument("--server-key")
    p.add_argument("--key")
    p.add_argument("--op-key")
    p.add_argument("--host", default="rogue")
    p.add_argument("--wait-ms", type=int, default=1500)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--hold-s", type=float, default=120)
    p.add_argument("--release-file", default="/nonexistent")
    p.add_argument("--order-file")
    p.add_argument("--capabilities", type=int, default=0)
    p.add_argument("--command", default="hosts")
    p.add_argument("--args", default="{}")
    p.add_argument("--frame-bytes", type=int, default=2 * 1024 * 1024)
    p.add_argument("--sha256", default="")
    p.add_argument("--interval-ms", type=int, default=200)
    p.add_argument("--revoke-cmd", help="JSON array: the command that revokes our key")
    a = p.parse_args()
    ctx = zmq.Context()
    fn = globals()["mode_" + a.mode.replace("-", "_")]
    res = fn(ctx, a)
    print(json.dumps(res, default=lambda b: b.decode(errors="replace") if isinstance(b, bytes) else str(b)), flush=True)
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
