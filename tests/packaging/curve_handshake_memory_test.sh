#!/usr/bin/env bash
# Each binary given defines and exports sodium_malloc, sodium_allocarray and sodium_free
# (common/transport/curve_handshake_memory.cc), so libzmq's CURVE handshake buffers, whether
# libzmq is linked statically or as libzmq.so.5, come from Gantry's allocator and not from
# libsodium's guarded pages. An executable's exported definition is the one the dynamic linker
# binds libzmq.so's and libsodium.so's references to.
# Usage: curve_handshake_memory_test.sh BINARY...
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
[[ $# -gt 0 ]] || fail "no binary given"
for bin in "$@"; do
  exported=$(nm -D --defined-only "$bin" | awk '{print $NF}')
  for sym in sodium_malloc sodium_allocarray sodium_free; do
    grep -qx "$sym" <<<"$exported" || fail "$bin does not export $sym"
  done
  echo "$(basename "$bin"): exports sodium_malloc, sodium_allocarray, sodium_free"
done
echo "PASS"
