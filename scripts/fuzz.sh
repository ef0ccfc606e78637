#!/usr/bin/env bash
# Fuzzes hoist's parsers with cargo-fuzz (libFuzzer); the targets are in fuzz/fuzz_targets and
# docs/fuzzing.md describes them.
#
#   scripts/fuzz.sh [SECONDS]     builds every target, then runs each for SECONDS (default 60)
#   scripts/fuzz.sh --build-only  only checks that the targets compile (what CI runs)
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer, -Cpasses=sancov-module); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1. It is installed from crates.io if missing.
#
# --build-only runs `cargo check` of the fuzz crate instead of a full `cargo fuzz build`: the
# instrumented release build of the whole dependency tree (ASan on every crate, C code included)
# takes well over the few minutes CI allows on 2 cores, while a check compiles every target
# against hoist's current API in about two minutes of CPU. A crash found by a run is saved
# under fuzz/artifacts/TARGET/ and can be replayed with `cargo fuzz run TARGET ARTIFACT`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--build-only" ]]; then
    exec cargo check --manifest-path fuzz/Cargo.toml --bins --locked
fi
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
    echo "usage: $0 [SECONDS | --build-only]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release
failed=()
for target in $(cargo fuzz list); do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "fuzz/corpus/$target"
    if ! cargo fuzz run --release "$target" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048; then
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes in $(cargo fuzz list | wc -l) targets"
