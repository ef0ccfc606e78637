#!/usr/bin/env bash
# crash.sh [--big] [RUNS] — the long form of the crash tests.
#
# `hoist pull` and `hoist push` of a multi-layer image, each killed with SIGKILL at RUNS random
# moments (default 25 each) spread over a measured run, then run again: the rerun completes,
# `hoist fsck` is clean, a rerun pull fetches only what the killed one had not kept (within 1% of
# the image plus 256 KiB per layer), both pulls together (fetching in 2 MiB windows) fetch at most
# 1% of the image plus a window, its lead and 256 KiB per layer beyond the image, a rerun push
# uploads only the layers the registry lacks, and the registry then serves the exact image (skopeo and a pull back agree on
# the digest).
# CI runs the short forms (4 pull runs, 3 push runs).
#
# The image is 4 incompressible layers of 16 MiB (HOIST_CRASH_LAYER_MB changes the size), or with
# --big the benchmark corpus's `big` image (4 gzip layers, ~200 MB; built by
# scripts/bench/make-corpus.sh into ${BENCH_DIR:-${TMPDIR:-/tmp}/hoist-bench}/corpus the first
# time). HOIST_CRASH_OCI=DIR uses any single-image OCI layout instead. The kill moments derive from
# a seed printed at the start (set HOIST_CRASH_SEED to replay a run).
set -euo pipefail
cd "$(dirname "$0")/.."
big=""
case "${1:-}" in
  --big) big=1; shift ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
esac
runs="${1:-25}"
scripts/install-deps.sh
if [ -n "$big" ]; then
  corpus="${BENCH_DIR:-${TMPDIR:-/tmp}/hoist-bench}/corpus"
  scripts/bench/make-corpus.sh "$corpus" >/dev/null
  export HOIST_CRASH_OCI="$corpus/big"
fi
HOIST_CRASH_RUNS="$runs" HOIST_CRASH_PUSH_RUNS="$runs" \
  cargo test --locked -p hoist --test cli crash -- --nocapture --test-threads=1
