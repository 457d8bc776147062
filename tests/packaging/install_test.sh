#!/usr/bin/env bash
# Packaging check (ctest label "packaging"): builds the .deb with CPack from an already built tree,
# unpacks it into a temp root with `dpkg -x` (what dpkg would lay down, without touching this
# machine), checks the files are where docs/INSTALLING.md says, and runs the installed binaries.
# Also checks `cmake --install --prefix` into a temp dir lays out the same tree.
# Usage: install_test.sh BUILD_DIR CPACK CMAKE
set -euo pipefail
# No `producer | grep -q` here: grep -q exits at its first match and, under pipefail, the
# producer's SIGPIPE would fail the check at random; grep >/dev/null reads everything.

build=$1 cpack=$2 cmake=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/gantry-pkg.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

expect_layout() {  # ROOT: the files every install must have
  local root=$1
  local f
  for f in usr/bin/gantry usr/sbin/gantry-coordinator usr/sbin/gantry-agent; do
    [[ -x $root/$f ]] || fail "$f missing or not executable under $root"
  done
  for f in lib/systemd/system/gantry-coordinator.service lib/systemd/system/gantry-agent.service \
           lib/tmpfiles.d/gantry.conf lib/sysusers.d/gantry.conf \
           share/doc/gantry/examples/coordinator.conf share/doc/gantry/examples/agent.conf \
           share/doc/gantry/INSTALLING.md share/doc/gantry/MONITORING.md share/doc/gantry/PROTOCOL.md; do
    [[ -f $root/usr/$f ]] || fail "usr/$f missing under $root"
  done
  grep -q '^ExecStart=/usr/sbin/gantry-coordinator ' "$root/usr/lib/systemd/system/gantry-coordinator.service" \
    || fail "coordinator unit does not start /usr/sbin/gantry-coordinator"
  # Nothing from the test suite, the demo or the benchmarks.
  if find "$root" -name '*test*' -o -name 'gantry-demo*' -o -name '*bench*' | grep . >/dev/null; then
    fail "test/demo/bench files in the install: $(find "$root" -name '*test*' -o -name 'gantry-demo*' -o -name '*bench*')"
  fi
  # The installed binaries run.
  "$root/usr/bin/gantry" --help | grep 'Usage: gantry' >/dev/null || fail "gantry --help"
  "$root/usr/sbin/gantry-coordinator" --help | grep 'gantry-coordinator' >/dev/null || fail "gantry-coordinator --help"
  "$root/usr/sbin/gantry-agent" --help | grep 'Usage: gantry-agent' >/dev/null || fail "gantry-agent --help"
  "$root/usr/bin/gantry" --version | grep '^gantry [0-9]' >/dev/null || fail "gantry --version"
}

# 1. cmake --install into a prefix.
"$cmake" --install "$build" --prefix "$work/prefix/usr" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "cmake --install"; }
expect_layout "$work/prefix"
echo "cmake --install: ok"

# 2. The .deb.
(cd "$work" && "$cpack" --config "$build/CPackConfig.cmake" -B "$work/deb" >"$work/cpack.log" 2>&1) \
  || { cat "$work/cpack.log"; fail "cpack"; }
deb=$(find "$work/deb" -maxdepth 1 -name 'gantry_*.deb' | head -n1)
[[ -n $deb ]] || { cat "$work/cpack.log"; fail "no .deb produced"; }
dpkg-deb --info "$deb" > "$work/info.txt"
cat "$work/info.txt"
for dep in libzmq5 libsodium23 libsqlite3-0 libyaml-cpp0.7 libboost-program-options1.74.0; do
  grep -q "Depends:.*$dep" "$work/info.txt" || fail "the package does not depend on $dep"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -t | grep 'postinst' >/dev/null || fail "no postinst in the package"
mkdir "$work/root"
dpkg -x "$deb" "$work/root"
expect_layout "$work/root"
# Every file a dpkg install lays down, for the log.
(cd "$work/root" && find . -type f | sort)
