#!/usr/bin/env bash
# make-corpus.sh DIR — the benchmark corpus: OCI image layouts built from files already on this
# machine, reproducibly (same machine state => same digests).
#
#   DIR/big    4 gzip layers (~200 MB compressed, ~470 MB of tar, one layer of ~140 MB)
#   DIR/zstd   big's four tars compressed with zstd
#   DIR/many   40 gzip layers of 0.3-3 MB each
#   DIR/v1     4 gzip layers; DIR/v2 shares the first 3 with v1, its last layer differs
#
# Each layout carries one manifest tagged "latest" (index.json annotation). Every tar is written
# in name order with mtime 0, owner/group 0 and GNU format; gzip runs with -n, so no timestamp or
# file name enters a blob. DIR/corpus.tsv lists image, layer count, blob bytes and tar bytes.
# Idempotent: DIR/.stamp holds the corpus version; a matching stamp means nothing is rebuilt.
set -euo pipefail
export LC_ALL=C TZ=UTC
VERSION=hoist-bench-corpus-1

OUT="${1:?usage: make-corpus.sh DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
say() { echo "make-corpus: $*" >&2; }
fail() { say "error: $*"; exit 1; }

if [ "$(cat "$OUT/.stamp" 2>/dev/null || true)" = "$VERSION" ]; then
  say "up to date in $OUT"; cat "$OUT/corpus.tsv"; exit 0
fi
for t in tar gzip zstd sha256sum jq find awk; do
  command -v "$t" >/dev/null || fail "needs $t"
done

TMP="$OUT/.build"
rm -rf "$TMP" "$OUT/.stamp"
mkdir -p "$TMP/pool"

GZ=application/vnd.oci.image.layer.v1.tar+gzip
ZST=application/vnd.oci.image.layer.v1.tar+zstd

# mktar NAME PATH... : $TMP/NAME.tar from paths relative to /, reproducibly
mktar() {
  local name="$1"; shift
  tar -C / --create --file="$TMP/$name.tar" --format=gnu --sort=name --mtime=@0 \
    --owner=0 --group=0 --numeric-owner --no-acls --no-xattrs --no-selinux \
    --exclude=__pycache__ "$@"
}
# mktar_list NAME LISTFILE : exactly the files of LISTFILE, in order
mktar_list() {
  tar -C / --create --file="$TMP/$1.tar" --format=gnu --mtime=@0 --owner=0 --group=0 \
    --numeric-owner --no-acls --no-xattrs --no-selinux --no-recursion \
    --verbatim-files-from -T "$2"
}
# pool FILE : moves FILE into the blob pool under its sha256; prints "hex size"
pool() {
  local hex size
  hex="$(sha256sum "$1" | cut -d' ' -f1)"; size="$(stat -c %s "$1")"
  mv -f "$1" "$TMP/pool/$hex"
  echo "$hex $size"
}
# squeeze NAME gz|zst : compresses NAME.tar once; writes NAME.KIND.desc = "hex size diffhex tarsize"
squeeze() {
  local name="$1" kind="$2" tarf="$TMP/$1.tar" diff
  [ -s "$TMP/$name.$kind.desc" ] && return 0
  diff="$(sha256sum "$tarf" | cut -d' ' -f1)"
  case "$kind" in
    gz) gzip -6 -n -c "$tarf" >"$tarf.$kind" ;;
    zst) zstd -3 -q --single-thread -c "$tarf" >"$tarf.$kind" ;;
  esac
  echo "$(pool "$tarf.$kind") $diff $(stat -c %s "$tarf")" >"$TMP/$name.$kind.desc"
}
# two_ways "CMD..." "CMD..." : runs two shell snippets side by side (the machine has 2 cores)
two_ways() { ( eval "$1" ) & local a=$!; ( eval "$2" ) & local b=$!; wait $a; wait $b; }

# layout IMAGE KIND LAYER... : writes DIR/IMAGE (config, manifest, index.json) from squeezed layers
layout() {
  local image="$1" kind="$2"; shift 2
  local mt; [ "$kind" = gz ] && mt=$GZ || mt=$ZST
  local layers='[]' diffs='[]' l hex size diff tsize
  for l in "$@"; do
    read -r hex size diff tsize <"$TMP/$l.$kind.desc"
    layers="$(jq -c --arg mt "$mt" --arg d "sha256:$hex" --argjson s "$size" --argjson t "$tsize" \
      '. + [{mediaType:$mt, digest:$d, size:$s, annotations:{"hoist.bench.tar-bytes":($t|tostring)}}]' <<<"$layers")"
    diffs="$(jq -c --arg d "sha256:$diff" '. + [$d]' <<<"$diffs")"
  done
  jq -cnj --argjson diffs "$diffs" '{architecture:"amd64", os:"linux",
      created:"1970-01-01T00:00:00Z", config:{Cmd:["/bin/sh"]},
      rootfs:{type:"layers", diff_ids:$diffs}}' >"$TMP/$image.config"
  read -r chex csize < <(pool "$TMP/$image.config")
  jq -cnj --arg c "sha256:$chex" --argjson cs "$csize" --argjson layers "$layers" \
    '{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json",
      config:{mediaType:"application/vnd.oci.image.config.v1+json", digest:$c, size:$cs},
      layers:$layers}' >"$TMP/$image.manifest"
  read -r mhex msize < <(pool "$TMP/$image.manifest")
  local dst="$TMP/layout-$image"
  rm -rf "$dst"; mkdir -p "$dst/blobs/sha256"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$dst/oci-layout"
  jq -cnj --arg d "sha256:$mhex" --argjson s "$msize" \
    '{schemaVersion:2, manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",
      digest:$d, size:$s, annotations:{"org.opencontainers.image.ref.name":"latest"}}]}' >"$dst/index.json"
  for hex in "$mhex" "$chex" $(jq -r '.[].digest | sub("^sha256:"; "")' <<<"$layers"); do
    ln -f "$TMP/pool/$hex" "$dst/blobs/sha256/$hex"
  done
  rm -rf "${OUT:?}/$image"; mv "$dst" "$OUT/$image"
  printf '%s\t%s\t%s\t%s\n' "$image" "$#" \
    "$(jq '[.[].size] | add' <<<"$layers")" \
    "$(jq '[.[].annotations["hoist.bench.tar-bytes"] | tonumber] | add' <<<"$layers")" >>"$TMP/corpus.tsv"
}

present() { local p; for p in "$@"; do [ -e "/$p" ] && echo "$p"; done; return 0; }
need_trees() { [ -n "$2" ] || fail "no source tree found for $1"; }

# ---- big / zstd ------------------------------------------------------------------------------
B1="$(present usr/lib/python3.11 usr/lib/python3.12 usr/lib/python3.13 usr/lib/python3)"
B2="$(present usr/lib/gcc usr/libexec | head -n1)"
# the large layer: a JDK (its lib/modules compresses about 2:1), else a Rust toolchain's lib dir
B3="$(present usr/lib/jvm/java-17-openjdk-amd64 usr/lib/jvm/temurin-25-jdk-amd64 | head -n1)"
if [ -z "$B3" ]; then
  B3="$(cd / && ls -d root/.rustup/toolchains/*/lib 2>/dev/null | head -n1 || true)"
fi
B4="$(present usr/share/perl usr/share/i18n usr/share/zoneinfo)"
for v in B1 B2 B3 B4; do need_trees "$v" "${!v}"; done
say "big: [$(echo $B1)] [$(echo $B2)] [$B3] [$(echo $B4)]"
# shellcheck disable=SC2086
two_ways "mktar big1 $(echo $B1); mktar big4 $(echo $B4)" "mktar big3 $B3; mktar big2 $(echo $B2)"
say "big: gzip -6 and zstd -3"
two_ways "squeeze big3 gz; squeeze big3 zst" \
         "for l in big1 big2 big4; do squeeze \$l gz; squeeze \$l zst; done"
layout big gz big1 big2 big3 big4
layout zstd zst big1 big2 big3 big4

# ---- many: 40 layers cut from a name-sorted file list ---------------------------------------
# A layer is closed when its estimated gzip size reaches its target (0.55-2.7 MB, varying
# deterministically with the layer number). Estimates: already-compressed files count whole,
# ELF/shared objects 40%, everything else (text) 25%.
read -r -a MT <<<"$(present usr/include usr/share/vim usr/share/man usr/libexec usr/share/doc | tr '\n' ' ')"
[ ${#MT[@]} -gt 0 ] || fail "no source trees for many"
say "many: from ${MT[*]}"
(cd / && find "${MT[@]}" \( -type f -o -type l \) -printf '%s\t%m\t%p\n') | sort -t"$(printf '\t')" -k3,3 \
  | awk -F'\t' -v dir="$TMP" '
      function goal(i) { return 550000 + ((i * 13) % 40) / 39 * 2150000 }
      BEGIN { n = 0; est = 0; g = goal(0) }
      n < 40 {
        s = $1
        if ($3 ~ /\.(gz|xz|bz2|zst|zip|jar|png|jpg|svgz|woff2?)$/) e = s
        else if ($3 ~ /\.so(\.[0-9]+)*$/ || $2 ~ /[1357]$/) e = s * 0.4
        else e = s / 4
        print $3 > (dir "/many" n ".list")
        est += e + 100
        if (est >= g) { close(dir "/many" n ".list"); n++; est = 0; g = goal(n) }
      }
      END { if (n < 40) { print "make-corpus: only " n " layers for many" > "/dev/stderr"; exit 1 } }'
MANY=()
for i in $(seq 0 39); do mktar_list "many$i" "$TMP/many$i.list"; MANY+=("many$i"); done
two_ways 'for i in $(seq 0 2 39); do squeeze many$i gz; done' 'for i in $(seq 1 2 39); do squeeze many$i gz; done'
layout many gz "${MANY[@]}"

# ---- v1 / v2: three shared layers, a fourth that differs -------------------------------------
V1="$(present usr/share/zoneinfo)"; V2="$(present usr/share/i18n)"; V3="$(present usr/lib/python3)"
V4A="$(present usr/share/perl)"; V4B="$(present usr/share/perl usr/lib/x86_64-linux-gnu/perl)"
for v in V1 V2 V3 V4A V4B; do need_trees "$v" "${!v}"; done
[ "$V4A" != "$V4B" ] || fail "v1 and v2 would be the same image"
# shellcheck disable=SC2086
two_ways "mktar v_a $(echo $V1); mktar v_b $(echo $V2); mktar v_1 $(echo $V4A)" \
         "mktar v_c $(echo $V3); mktar v_2 $(echo $V4B)"
two_ways "squeeze v_a gz; squeeze v_b gz; squeeze v_1 gz" "squeeze v_c gz; squeeze v_2 gz"
layout v1 gz v_a v_b v_c v_1
layout v2 gz v_a v_b v_c v_2

{ printf 'image\tlayers\tblob_bytes\ttar_bytes\n'; cat "$TMP/corpus.tsv"; } >"$OUT/corpus.tsv"
# the uncompressed tars of big stay: the extraction floor (tar -x) reads them
mkdir -p "$OUT/big-tars"
for l in big1 big2 big3 big4; do mv -f "$TMP/$l.tar" "$OUT/big-tars/$l.tar"; done
rm -rf "$TMP"
echo "$VERSION" >"$OUT/.stamp"
say "done in $OUT"
cat "$OUT/corpus.tsv"
