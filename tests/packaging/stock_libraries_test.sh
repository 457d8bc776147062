#!/usr/bin/env bash
# Gantry uses its libraries as their authors ship them (ctest label "packaging"):
# - the agent needs the distribution's shared libzmq.so.5 and libsodium.so.23 (readelf NEEDED), and
#   the dynamic linker finds them where the distribution's packages put them, so a security update
#   installed with the package manager reaches the agent at its next restart;
# - no binary given defines a symbol in libsodium's, libzmq's or libpgm's namespaces (sodium_*,
#   crypto_*, randombytes_*, zmq_*, pgm_*), neither exported (nm -D) nor in its symbol table (nm):
#   such a definition would replace the library's own for every caller in the process.
# Usage: stock_libraries_test.sh PATH/TO/gantry-agent BINARY...
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
[[ $# -ge 1 ]] || fail "usage: $0 PATH/TO/gantry-agent BINARY..."
agent=$1

needed=$(readelf -d "$agent" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "gantry-agent needs: $(tr '\n' ' ' <<<"$needed")"
resolved=$(ldd "$agent")
for lib in libzmq.so.5 libsodium.so.23; do
  grep -qx "$lib" <<<"$needed" || fail "$agent does not need $lib"
  path=$(awk -v l="$lib" '$1 == l && $2 == "=>" {print $3}' <<<"$resolved")
  [[ -n $path && -f $path ]] || fail "ldd does not resolve $lib for $agent: $resolved"
  if command -v dpkg-query >/dev/null; then
    # dpkg knows the file under its merged-/usr or its /lib name.
    real=$(readlink -f "$path")
    owner=$(dpkg-query -S "$real" 2>/dev/null || dpkg-query -S "${real#/usr}" 2>/dev/null || true)
    [[ -n $owner ]] || fail "$lib resolves to $real, which no installed package owns"
    echo "$lib -> $real (${owner%%:*})"
  else
    echo "$lib -> $path"
  fi
done
if [[ -n $(readelf -s "$agent" 2>/dev/null | grep -E ' (zmq_socket|zmq_ctx_new)$' | grep -v ' UND ') ]]; then
  fail "$agent carries libzmq's code (a static libzmq)"
fi

foreign='^(sodium_|crypto_|randombytes_|zmq_|pgm_)'
for bin in "$@"; do
  [[ -x $bin ]] || fail "$bin is not an executable"
  defined=$( { nm -D --defined-only "$bin" 2>/dev/null; nm --defined-only "$bin" 2>/dev/null || true; } \
             | awk '{print $NF}' | grep -E "$foreign" | sort -u || true)
  [[ -z $defined ]] || fail "$bin defines another library's symbols: $(tr '\n' ' ' <<<"$defined")"
  echo "$(basename "$bin"): defines no sodium_/crypto_/randombytes_/zmq_/pgm_ symbol"
done
echo "PASS"
