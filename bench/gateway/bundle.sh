#!/usr/bin/env bash
# Packs the gateway benchmark for a machine that has python3 and taskset but none of the peers
# (no Debian packages, no npm, no internet): the Release segma, nginx and node with the shared
# libraries they need beside them, and Portkey's node_modules.
#
#   bench/gateway/bundle.sh DIR      # on this machine, after bench/gateway/run.sh has run once
#   DIR/run.sh --load-core 2 ...     # there, from the repository root; flags go to gateway_bench.py
#
# The simulator backend runs the segma beside segma's own executable: the binaries keep their names
# in DIR/lib. Each runs through a wrapper that sets LD_LIBRARY_PATH for it alone, so the other
# programs of that machine keep their own libraries. glibc is not packed: the target's must be
# at least as new as Debian 12's (2.36).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=$(realpath -m "$1")
CACHE=${SEGMA_BENCH_CACHE:-/var/cache/segma/bench}
rm -rf "$DIR" && mkdir -p "$DIR/bin" "$DIR/lib"

# wrap NAME BINARY: DIR/bin/NAME runs BINARY (copied to DIR/lib) with the packed libraries.
wrap() {
  cp "$2" "$DIR/lib/$1"
  ldd "$2" | awk '$3 ~ /^\// {print $3}' | grep -Ev '/(libc|libm|libdl|libpthread|librt)\.so' |
    xargs -r cp -Ln -t "$DIR/lib"
  cat >"$DIR/bin/$1" <<EOF
#!/bin/sh
d=\$(dirname "\$(readlink -f "\$0")")/../lib
LD_LIBRARY_PATH=\$d exec "\$d/$1" "\$@"
EOF
  chmod +x "$DIR/bin/$1"
}
wrap segma build/release/src/cli/segma
wrap nginx "$(command -v nginx || echo /usr/sbin/nginx)"
wrap node "$(command -v node)"
tar -C "$CACHE" -cJf "$DIR/portkey.tar.xz" portkey
# node is large: packed, and unpacked by run.sh.
xz -T0 "$DIR/lib/node"
cat >"$DIR/run.sh" <<'EOF'
#!/bin/sh
set -eu
d=$(dirname "$(readlink -f "$0")")
[ -f "$d/lib/node" ] || xz -dk "$d/lib/node.xz"
[ -d "$d/portkey" ] || tar -C "$d" -xJf "$d/portkey.tar.xz"
work=$(mktemp -d /tmp/segma-gateway-bench.XXXXXX)
out=${OUT:-$work/out}
mkdir -p "$out"
PATH=$d/bin:$PATH python3 bench/gateway/gateway_bench.py --segma "$d/bin/segma" --work "$work" \
  --out "$out" --portkey-dir "$d/portkey" "$@"
EOF
chmod +x "$DIR/run.sh"
du -sh "$DIR"
