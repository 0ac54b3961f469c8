#!/usr/bin/env bash
# Gateway benchmark: direct vs nginx vs segma (usage journal on and off) vs Portkey against one
# engine-sim, in one run
# (bench/gateway/gateway_bench.py says how; results go to docs/benchmarks.md by hand).
#
#   bench/gateway/run.sh [--quick] [--soak SECONDS] [--skip portkey,busy-poll,no-journal,no-scrape] [--scrape-interval S]
#
# Installs what is missing: nginx-light (apt) and @portkey-ai/gateway@1.15.2 (npm, in
# $SEGMA_BENCH_CACHE, default /var/cache/segma/bench). Uses the Release build (make release).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${SEGMA_BENCH_CACHE:-/var/cache/segma/bench}
WORK=$(mktemp -d /tmp/segma-gateway-bench.XXXXXX)
OUT=${OUT:-$WORK/out}
mkdir -p "$CACHE" "$OUT"
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null
if [[ ! -f $CACHE/portkey/node_modules/@portkey-ai/gateway/build/start-server.js ]]; then
  mkdir -p "$CACHE/portkey"
  (cd "$CACHE/portkey" && npm install --silent --no-audit --no-fund @portkey-ai/gateway@1.15.2)
fi
[[ -x build/release/src/cli/segma ]] || make release
python3 bench/gateway/gateway_bench.py --segma "$PWD/build/release/src/cli/segma" --work "$WORK" \
  --out "$OUT" --portkey-dir "$CACHE/portkey" "$@"
echo "results: $OUT" >&2
