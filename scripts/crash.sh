#!/usr/bin/env bash
# The long form of the crash test: `hoist pull` of a 4-layer, 70 MB image killed with SIGKILL at
# RUNS random moments (default 25), each followed by a second pull that must complete, leave
# `hoist fsck` clean, and fetch only what the first pull had not kept. CI runs 4 of them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-25}"
scripts/install-deps.sh
HOIST_CRASH_RUNS="$runs" cargo test --locked -p hoist --test cli crash -- --nocapture
