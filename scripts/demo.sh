#!/usr/bin/env bash
# The main job, from a fresh machine: install the registry if missing, start it on 127.0.0.1,
# build hoist, push a sample two-layer image (built from local files) to the registry with hoist,
# and pull it back into a fresh local store with progress; then show and unpack it.
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

root="${HOIST_DEMO_ROOT:-$(mktemp -d)/store}"
echo "== hoist pull $host/demo:latest (store: $root)"
"$hoist" --root "$root" pull "$host/demo:latest"
echo "== hoist images"
"$hoist" --root "$root" images
rootfs="$(mktemp -d)/rootfs"
echo "== hoist unpack $host/demo:latest $rootfs"
"$hoist" --root "$root" unpack "$host/demo:latest" "$rootfs"
cat "$rootfs/etc/demo/hello.txt"
