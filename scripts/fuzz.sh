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
# instrumented release build of the whole dependency tree (ASan, debug assertions and overflow
# checks on every crate, C code included) takes about 12 minutes on 2 busy cores, well over the
# few minutes CI allows, while a check compiles every target against hoist's current API in about
# two minutes of CPU. Fuzz builds use 16 codegen units: a much faster build for slightly slower
# runs. A crash found by a run is saved under fuzz/artifacts/TARGET/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --codegen-units 16 TARGET ARTIFACT
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
build_opts=(--codegen-units 16)
cargo fuzz build "${build_opts[@]}"
failed=()
for target in $(cargo fuzz list); do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "fuzz/corpus/$target"
    # Committed seed inputs (fuzz/seeds/TARGET) start the corpus where random bytes rarely get.
    seeds=()
    if [[ -d "fuzz/seeds/$target" ]]; then
        seeds=("fuzz/seeds/$target")
    fi
    if ! cargo fuzz run "${build_opts[@]}" "$target" "fuzz/corpus/$target" "${seeds[@]}" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048; then
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes in $(cargo fuzz list | wc -l) targets"
