#!/usr/bin/env bash
# Packs the gateway benchmark for a machine that has python3 and taskset but none of the peers
# (no Debian packages, no npm, no internet): segma from scripts/bundle, nginx and node with the
# shared libraries they need, and Portkey's node_modules.
#
#   bench/gateway/bundle.sh DIR      # here, after bench/gateway/run.sh has run once
#   DIR/run.sh --load-core 1 ...     # there, from the repository root; flags go to gateway_bench.py
#
# nginx and node run through wrappers that set LD_LIBRARY_PATH for them alone, so the other
# programs of that machine keep their own libraries. The C runtime is not packed (copy-libs).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=$(realpath -m "$1")
CACHE=${SEGMA_BENCH_CACHE:-/var/cache/segma/bench}
scripts/bundle "$DIR" >/dev/null  # bin/segma, lib/ (found through its $ORIGIN rpath)
rm -f "$DIR.tar.gz"

# wrap NAME BINARY: DIR/bin/NAME runs BINARY (copied to DIR/peers) with its libraries (DIR/lib).
wrap() {
  mkdir -p "$DIR/peers"
  cp "$2" "$DIR/peers/$1"
  scripts/copy-libs "$2" "$DIR/lib"
  cat >"$DIR/bin/$1" <<WRAPPER
#!/bin/sh
d=\$(dirname "\$(readlink -f "\$0")")/..
LD_LIBRARY_PATH=\$d/lib exec "\$d/peers/$1" "\$@"
WRAPPER
  chmod +x "$DIR/bin/$1"
}
wrap nginx "$(command -v nginx || echo /usr/sbin/nginx)"
wrap node "$(command -v node)"
xz -T0 "$DIR/peers/node"  # large: unpacked by run.sh
tar -C "$CACHE" -cJf "$DIR/portkey.tar.xz" portkey
cat >"$DIR/run.sh" <<'EOF2'
#!/bin/sh
set -eu
d=$(dirname "$(readlink -f "$0")")
[ -f "$d/peers/node" ] || xz -dk "$d/peers/node.xz"
[ -d "$d/portkey" ] || tar -C "$d" -xJf "$d/portkey.tar.xz"
work=$(mktemp -d /tmp/segma-gateway-bench.XXXXXX)
out=${OUT:-$work/out}
mkdir -p "$out"
PATH=$d/bin:$PATH python3 bench/gateway/gateway_bench.py --segma "$d/bin/segma" --work "$work" \
  --out "$out" --portkey-dir "$d/portkey" "$@"
EOF2
chmod +x "$DIR/run.sh"
du -sh "$DIR"
