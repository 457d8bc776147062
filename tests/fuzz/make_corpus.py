#!/usr/bin/python3
"""Writes the seed corpus under tests/fuzz/corpus/ (committed; rerun to regenerate)."""
import io, os, sys, tarfile
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "integration"))
from hostile_client import mp, envelope, bombs  # noqa: E402

def put(kind, name, data):
    os.makedirs(os.path.join(here, "corpus", kind), exist_ok=True)
    with open(os.path.join(here, "corpus", kind, name), "wb") as f:
        f.write(data)

sha = "ab" * 32
put("decode", "hello", envelope(1, {"protocol_version": 1, "host_id": "web-1", "agent_version": "0.1",
                                    "labels": {"zone": "a"}, "services": [{"name": "web", "current_version": "v1",
                                    "previous_version": "", "state": "idle", "order_id": ""}]}))
put("decode", "heartbeat", envelope(3, {"seq": 7}))
put("decode", "order", envelope(4, {"order_id": "r1-1", "rollout_id": 1, "service": "web", "kind": "update",
                                    "version": "v2", "sha256": sha, "size": 10, "manifest": "{}", "signature": "ab" * 64}))
put("decode", "chunk", envelope(7, {"sha256": sha, "offset": 0, "total_size": 4, "data": b"abcd"}))
put("decode", "report", envelope(9, {"order_id": "r1-1", "rollout_id": 1, "service": "web", "outcome": "succeeded",
                                     "running_version": "v2", "message": "", "timings_ms": {"total": 5}}))
put("decode", "op_request", envelope(12, {"request_id": "1", "command": "hosts", "args": {"x": [1, {"y": None}]}}))
for name, frame in bombs().items():
    if len(frame) < 4096:
        put("decode", "bomb_" + name, frame)

def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, typ, data, link in entries:
            i = tarfile.TarInfo(name); i.type = typ; i.linkname = link; i.mode = 0o755
            i.size = len(data) if typ == tarfile.REGTYPE else 0
            t.addfile(i, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
    return buf.getvalue()
R, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
put("tar", "release", tar([("bin", D, b"", ""), ("bin/app", R, b"#!/bin/sh\necho hi\n", ""), ("release.conf", R, b"version=v1\n", "")]))
put("tar", "symlinks", tar([("a", R, b"x", ""), ("b", S, b"", "a"), ("c", H, b"", "a")]))
put("tar", "dotdot", tar([("../x", R, b"x", "")]))
put("tar", "escape_link", tar([("l", S, b"", "../.."), ("l/x", R, b"x", "")]))

manifest = '{"created":"2024-01-01T00:00:00Z","service":"web","sha256":"%s","size":10,"type":"gantry-release-manifest/1","version":"v2"}' % sha
put("manifest", "valid", manifest.encode())
put("manifest", "extra_field", manifest.replace('"size"', '"x":1,"size"').encode())
put("manifest", "nested", b'{"a":' * 50 + b'1' + b'}' * 50)

# coordinator_path and agent_journal: valid messages with invalid UTF-8 ("\xff\xfeAB" put in
# place of the 4 UTF-8 bytes of "\u00ff\u00fe", so every length stays right), empty strings and
# 60 KiB strings. coordinator_path's first byte: bits 0-1 the connection (web-1..web-4), bits
# 2-3 the key with bit 4 (CURVE on: the host's, a pending, an unknown key, none), bit 5 tick,
# bit 6 aim a report/progress/ack at the host's open order.
BAD = "\u00ff\u00fe"
HUGE = "x" * (60 * 1024)

def raw(frame):
    return frame.replace("\u00ff\u00fe".encode(), b"\xff\xfeAB")

def hello(host, version, agent_version):
    return envelope(1, {"protocol_version": 1, "host_id": host, "agent_version": agent_version,
                        "labels": {"role": "web"}, "services": [{"name": "web", "current_version": version,
                        "previous_version": "", "state": "idle", "order_id": ""}]})

def report(outcome, message, running="v2"):
    return envelope(9, {"order_id": "r1-1", "rollout_id": 1, "service": "web", "outcome": outcome,
                        "running_version": running, "message": message, "timings_ms": {"total": 5}})

def op(command, args):
    return envelope(12, {"request_id": "1", "command": command, "args": args})

coord = {
    "hello_bad_version": b"\x00" + hello("web-1", "v1", BAD),
    "hello_huge_version": b"\x01" + hello("web-2", "v1", HUGE),
    "hello_empty_version": b"\x02" + hello("web-3", "v1", ""),
    "heartbeat_tick": b"\x20" + envelope(3, {"seq": 7}),
    "report_ok_bad": b"\x40" + report("succeeded", BAD),
    "report_ok_empty": b"\x41" + report("succeeded", ""),
    "report_failed_huge": b"\x42" + report("failed", HUGE, "v1"),
    "report_reverted_bad": b"\x43" + report("failed_reverted", "probe said " + BAD, "v1"),
    "progress_bad": b"\x40" + envelope(8, {"order_id": "r1-1", "phase": "verifying", "detail": BAD, "at_ms": 5}),
    "progress_huge": b"\x41" + envelope(8, {"order_id": "r1-1", "phase": "fetching", "detail": HUGE}),
    "ack_rejected_bad": b"\x40" + envelope(5, {"order_id": "r1-1", "status": "rejected", "message": BAD}),
    "fetch": b"\x00" + envelope(6, {"sha256": "a" * 64, "offset": 0, "length": 4096}),
    "error_bad": b"\x00" + envelope(10, {"code": BAD, "message": HUGE, "ref_type": 9, "ref_id": ""}),
    "secure_hello": b"\x10" + hello("web-1", "v1", BAD),
    "secure_hello_pending_key": b"\x15" + hello("web-2", "v1", HUGE),
    "secure_hello_unknown_key": b"\x1a" + hello("web-3", "v1", ""),
    "secure_no_key": b"\x1f" + envelope(3, {"seq": 1}),
    "secure_report": b"\x51" + report("succeeded", BAD),
    "op_start_bad_reason": b"\x00" + op("rollout.start", {"service": "web", "version": "v1", "reason": BAD}),
    "op_pause_huge_reason": b"\x00" + op("rollout.pause", {"service": "web", "reason": HUGE}),
    "op_abort_empty_reason": b"\x00" + op("rollout.abort", {"service": "web", "reason": ""}),
    "op_rollback_bad": b"\x00" + op("rollback", {"service": "web", "reason": BAD}),
    "op_status": b"\x00" + op("status", {"service": "web"}),
    "op_rollout_get": b"\x00" + op("rollout.get", {"service": "web", "events": True}),
    "op_history": b"\x00" + op("history", {"service": "web"}),
    "op_audit": b"\x00" + op("audit", {"limit": 100}),
    "op_hosts": b"\x00" + op("hosts", {}),
    "op_keys_revoke_bad": b"\x00" + op("keys.revoke", {"target": BAD}),
    "op_upload_bad": b"\x00" + op("release.upload", {"service": "web", "version": "v3", "data": b"\xff\xfe",
                                                    "manifest": BAD, "signature": ""}),
}
for name, frame in coord.items():
    put("coordinator_path", name, raw(frame))

order = {"order_id": "r1-1", "rollout_id": 1, "service": "web", "kind": "update", "version": "v2", "sha256": sha,
         "size": 10, "manifest": "{}", "signature": "ab" * 64}
journal = {
    "report_bad": report("failed", BAD, "v1"),
    "report_empty": report("succeeded", ""),
    "report_huge": report("failed_reverted", HUGE, "v1"),
    "order": envelope(4, order),
    "order_bad_manifest": envelope(4, dict(order, manifest=BAD)),
    "order_huge_manifest": envelope(4, dict(order, order_id="r1-2", manifest=HUGE)),
}
for name, frame in journal.items():
    put("agent_journal", name, raw(frame))

# The etcd store's stored values (etcd_codec): the first byte picks the row kind.
import json  # noqa: E402
etcd_rows = {
    "counters": (0, {"rollout": 1, "event": 2, "audit": 3, "order": 4, "release": 5, "epoch": 6, "group": 7}),
    "host": (1, {"host_id": "h", "labels": {"z": "a"}, "services": [], "first_seen": 1, "last_seen": 2}),
    "rollout": (3, {"id": 1, "service": "web", "version": "v2", "kind": "rollout", "phase": "running",
                    "created_by": "a", "reason": "", "created_at": 1, "finished_at": 0, "revision": 0, "state": {}}),
    "order": (4, {"order_id": "r1-1", "rollout_id": 1, "host_id": "h", "body": "{}", "acked": False,
                  "created_at": 1, "seq": 1}),
    "event": (7, {"id": 1, "rollout_id": 1, "at": 1, "message": "ordered web-1"}),
    "event_group": (7, [{"id": 1, "rollout_id": 1, "at": 1, "message": "ordered web-1"},
                        {"id": 2, "rollout_id": 1, "at": 2, "message": "web-1 succeeded"}]),
    "timeline_group": (6, [{"rollout_id": 1, "host_id": "web-1", "seq": 0, "phase": "swap", "at_ms": 1,
                            "received_ms": 2}]),
    "desired": (9, {"service": "web", "version": "v2", "selector": "", "converge": "auto", "plan": [],
                    "rollout_id": 1, "held": False, "note": "", "updated_at": 1}),
    "slot_plan": (12, [{"host_id": "web-1", "state": "ordered"}, {"host_id": "web-2", "state": "pending"}]),
    "slot": (13, {"host_id": "web-1", "state": "ordered"}),
}
for name, (kind, row) in etcd_rows.items():
    put("etcd_codec", name, bytes([kind]) + json.dumps(row).encode())
put("etcd_codec", "big_number", bytes([7]) + b'{"id":18446744073709551616,"rollout_id":-1,"at":1e400,"message":""}')
put("etcd_codec", "bad_utf8", bytes([1]) + b'{"host_id":"\xff\xfe","labels":{},"services":[],"first_seen":1,"last_seen":2}')
