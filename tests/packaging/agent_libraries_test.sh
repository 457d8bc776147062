#!/usr/bin/env bash
# The agent binary (ctest label "packaging"): linked with libzmq.a, it needs none of the shared
# libraries Debian's libzmq.so.5 would load (PGM, NORM, Kerberos/GSSAPI, libbsd: ~1.5 MiB of an
# idle agent's memory, docs/BENCHMARKS.md figure 5), it starts, and it refuses a coordinator
# endpoint other than tcp:// (libzmq would abort on a PGM or NORM socket it cannot open:
# agent/zmq_unused_transports.cc).
# Usage: agent_libraries_test.sh PATH/TO/gantry-agent
set -euo pipefail
agent=$1
fail() { echo "FAIL: $*" >&2; exit 1; }

needed=$(readelf -d "$agent" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[[ -n $needed ]] || fail "readelf found no NEEDED entries in $agent"
for lib in libzmq libpgm libnorm libgssapi_krb5 libkrb5 libk5crypto libbsd libsystemd libcrypto; do
  if grep -E "^${lib}[.-]" <<<"$needed" >/dev/null; then
    fail "$agent needs $(grep -E "^${lib}[.-]" <<<"$needed" | head -1)"
  fi
done
echo "gantry-agent needs: $(tr '\n' ' ' <<<"$needed")"

"$agent" --version >/dev/null || fail "gantry-agent --version failed"

work=$(mktemp -d "${TMPDIR:-/tmp}/gantry-agentlibs.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
printf 'host_id = h1\nstate_dir = %s/state\n[service.web]\nroot = %s/root\nrestart_command = true\n' "$work" "$work" >"$work/agent.conf"
for ep in "pgm://lo;239.192.1.1:5555" "norm://127.0.0.1:5557" "ipc:///run/gantry.sock"; do
  set +e
  out=$(timeout 20 "$agent" --config "$work/agent.conf" --coordinator "$ep" 2>&1)
  rc=$?
  set -e
  [[ $rc -ne 0 && $rc -ne 124 && $rc -lt 128 ]] || fail "agent with --coordinator $ep exited $rc (want a config error): $out"
  grep -F "coordinator: endpoint '$ep' is not tcp://" <<<"$out" >/dev/null \
    || fail "agent with --coordinator $ep did not say why: $out"
done
echo "PASS"
