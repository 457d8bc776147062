#!/usr/bin/env bash
# Each binary given defines and exports the libsodium functions Gantry replaces for libzmq's
# CURVE handshake (common/transport/curve_handshake.h): sodium_malloc, sodium_allocarray and
# sodium_free (its buffers from malloc + wipe, not guarded pages), crypto_box, crypto_box_open and
# crypto_box_beforenm (a shared key derived once, not twice). An executable's exported definition
# is the one the dynamic linker binds libzmq.so's and libsodium.so's references to, and the one
# a static libzmq is linked against.
# Usage: curve_handshake_memory_test.sh BINARY...
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
[[ $# -gt 0 ]] || fail "no binary given"
for bin in "$@"; do
  exported=$(nm -D --defined-only "$bin" | awk '{print $NF}')
  for sym in sodium_malloc sodium_allocarray sodium_free crypto_box crypto_box_open crypto_box_beforenm; do
    grep -qx "$sym" <<<"$exported" || fail "$bin does not export $sym"
  done
  echo "$(basename "$bin"): exports the six"
done
echo "PASS"
