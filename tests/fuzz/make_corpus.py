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
