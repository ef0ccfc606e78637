#!/usr/bin/env bash
# partial.sh — measures partial pulls of zstd:chunked layers and writes the result into
# BENCHMARKS.md between the `partial:begin` and `partial:end` markers.
#
# The measurement is the ignored test `bench_partial_pull_bytes` of hoist-distribution's `dist`
# tests, run RUNS times (default 3): a real registry (started by the test on a free loopback
# port) behind the fault proxy, which counts the response body bytes it sends. Corpus: a tree of
# 300 files (~24 MB, incompressible) as one zstd:chunked layer (v1); v2 is the same tree with 10
# files changed and 5 added. v1 is pulled, then v2 (partial pull); then, into a store that also
# holds v1, v2 again with partial pulls off (plain pull). Reported: bytes sent for v2's layer
# blob in both cases, against the bytes of the files that changed plus the layer's metadata.
#
#   RUNS                number of runs (median reported), default 3
#   CARGO_TARGET_DIR    as usual
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${RUNS:-3}"
OUT=BENCHMARKS.md
say() { echo "bench/partial: $*" >&2; }
command -v jq >/dev/null || { say "needs jq"; exit 1; }

results=()
for i in $(seq 1 "$RUNS"); do
  say "run $i/$RUNS"
  line=$(cargo test -q -p hoist-distribution --test dist bench_partial_pull_bytes \
           -- --ignored --nocapture 2>/dev/null | sed -n 's/^PARTIAL_BENCH //p')
  [ -n "$line" ] || { say "run $i produced no result"; exit 1; }
  results+=("$line")
done
all=$(printf '%s\n' "${results[@]}" | jq -s .)
median() { echo "$all" | jq "[.[].$1] | sort | .[(length / 2 | floor)]"; }
layer=$(median layer_bytes); changed=$(median changed_bytes); meta=$(median metadata_bytes)
partial=$(median partial_bytes); plain=$(median plain_bytes)
psecs=$(median partial_secs); qsecs=$(median plain_secs)
files1=$(echo "$all" | jq '.[0].files_v1'); files2=$(echo "$all" | jq '.[0].files_v2')
ratio=$(awk -v p="$partial" -v c="$changed" -v m="$meta" 'BEGIN { printf "%.3f", p / (c + m) }')
share=$(awk -v p="$partial" -v q="$plain" 'BEGIN { printf "%.1f", 100 * p / q }')
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }
secs() { awk -v s="$1" 'BEGIN { printf "%.2f", s }'; }

section=$(cat <<MD
<!-- partial:begin (written by scripts/bench/partial.sh) -->
### Partial pulls (zstd:chunked)

\`RUNS=$RUNS scripts/bench/partial.sh\`, $(date -u +%Y-%m-%d), median of $RUNS runs. One-layer
images pushed as zstd:chunked (hoist's writer): v1 = $files1 files, v2 = the same tree with 10
files changed and 5 added ($files2 files; layer blob $(mb "$layer") MB). The store holds v1; bytes
are the response bodies the fault proxy sent for v2's layer blob (metadata and chunks, or the
whole blob).

| pull of v2 | bytes fetched | time |
|---|---:|---:|
| partial (default) | $partial ($(mb "$partial") MB, $share % of plain) | $(secs "$psecs") s |
| plain (\`--no-partial\`) | $plain ($(mb "$plain") MB) | $(secs "$qsecs") s |

Bytes of the changed files: $changed; layer metadata (TOC + tar-split + footer): $meta.
Partial fetch / (changed + metadata) = **$ratio** (bound: ≤ 1.2). The rebuilt layer has the
config's DiffID and the same unpacked tree as the plain pull (asserted by the run). Times are on
loopback, where bandwidth is free: the partial pull spends its time hashing local candidate
files and rebuilding, so it only wins on real networks.
<!-- partial:end -->
MD
)
if grep -q '<!-- partial:begin' "$OUT"; then
  awk -v s="$section" '
    /<!-- partial:begin/ { print s; skip = 1; next }
    /<!-- partial:end -->/ { skip = 0; next }
    !skip { print }' "$OUT" >"$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
else
  printf '\n%s\n' "$section" >>"$OUT"
fi
say "partial $partial bytes, plain $plain bytes, ratio $ratio; written to $OUT"
