#!/usr/bin/env bash
# demo-image.sh DIR — builds a small deterministic two-layer OCI image layout in DIR (tag "latest")
# from files on this machine: plain tar + gzip + sha256 and hand-written JSON.
set -euo pipefail
export LC_ALL=C TZ=UTC
OUT="${1:?usage: demo-image.sh DIR}"
rm -rf "$OUT"; mkdir -p "$OUT/blobs/sha256"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
TAR=(tar --create --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --no-acls --no-xattrs)

# layer 1: a small tree of real files; layer 2: a file of its own
mkdir -p "$work/l1/etc/demo" "$work/l1/usr/share/demo" "$work/l2/etc/demo"
cp /etc/os-release "$work/l1/etc/demo/os-release" 2>/dev/null || echo "demo" >"$work/l1/etc/demo/os-release"
head -c 3000000 /usr/bin/* 2>/dev/null | head -c 3000000 >"$work/l1/usr/share/demo/blob.bin" || true
echo "hello from hoist" >"$work/l2/etc/demo/hello.txt"
ln -s hello.txt "$work/l2/etc/demo/hello-link"

blob() { # blob FILE -> prints "digest size", stores it
  local d s; d="$(sha256sum "$1" | cut -d' ' -f1)"; s="$(stat -c %s "$1")"
  cp "$1" "$OUT/blobs/sha256/$d"; echo "$d $s"
}
layers=""; diffs=""
for l in l1 l2; do
  "${TAR[@]}" -C "$work/$l" -f "$work/$l.tar" .
  diff="$(sha256sum "$work/$l.tar" | cut -d' ' -f1)"
  gzip -n -6 -c "$work/$l.tar" >"$work/$l.tar.gz"
  read -r d s < <(blob "$work/$l.tar.gz")
  layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$s}"
  diffs="$diffs${diffs:+,}\"sha256:$diff\""
done
arch="$(uname -m)"; case "$arch" in x86_64) arch=amd64;; aarch64) arch=arm64;; esac
printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
  "$arch" "$diffs" >"$work/config.json"
read -r cd cs < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
  "$cd" "$cs" "$layers" >"$work/manifest.json"
read -r md ms < <(blob "$work/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' >"$OUT/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
  "$md" "$ms" >"$OUT/index.json"
echo "sha256:$md"
