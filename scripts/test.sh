#!/usr/bin/env bash
# The test command: installs the registry and interop peers if missing, then runs every test of the
# workspace. Integration tests start their own real registries on 127.0.0.1 (free ports, temp dirs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked --no-fail-fast "$@"
