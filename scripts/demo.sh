#!/usr/bin/env bash
# The main job, from a fresh machine: install the registry if missing, start it on 127.0.0.1,
# build hoist, put a sample two-layer image in the registry, and read it back with hoist.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
url="$(scripts/registry.sh start)"
host="${url#http://}"

echo "== building hoist (release)"
cargo build --release --locked -p hoist
hoist=target/release/hoist

echo "== building a sample image from local files"
layout="$(mktemp -d)/demo-oci"
scripts/demo-image.sh "$layout" >/dev/null
echo "== hoist copy oci:$layout:latest docker://$host/demo:latest"
"$hoist" copy "oci:$layout:latest" "docker://$host/demo:latest"
"$hoist" -q copy "oci:$layout:latest" "docker://$host/demo:v1"

echo "== hoist tags $host/demo"
"$hoist" tags "$host/demo"
echo "== hoist inspect $host/demo:latest"
"$hoist" inspect "$host/demo:latest"
