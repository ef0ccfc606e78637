#!/usr/bin/env bash
# bench.sh [--runs N] [--only W1,W2,...] — hoist against its peers, side by side, on this machine.
#
# Builds hoist (release), builds the corpus (scripts/bench/make-corpus.sh), starts two real
# registries on loopback (scripts/registry.sh: one seeded with the corpus, one emptied before every
# push run), then runs each workload cold — a fresh store or directory every run — with hoist and
# its peer(s) alternating A B A B. Every run is measured by GNU time (wall, user, sys, peak RSS)
# plus the bytes that crossed the loopback interface. The summary goes into BENCHMARKS.md between
# the "bench:results" markers; everything else in that file is left alone.
#
# Workloads: copy-big copy-many copy-zstd pull-nounpack-big pull-big push-big repush-big shared-v1v2
#
# Environment: BENCH_DIR (work area, default ${TMPDIR:-/tmp}/hoist-bench), BENCH_PORT
# (seeded registry port, default 5591; the push registry uses BENCH_PORT+1), CARGO_TARGET_DIR.
set -euo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CMDLINE="scripts/bench.sh${*:+ $*}"
RUNS=5
ONLY=""
ALL="copy-big copy-many copy-zstd pull-nounpack-big pull-big push-big repush-big shared-v1v2"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="${2:?--runs N}"; shift 2 ;;
    --only) ONLY="${2:?--only W1,W2}"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
WORKLOADS="${ONLY//,/ }"; WORKLOADS="${WORKLOADS:-$ALL}"
for w in $WORKLOADS; do
  case " $ALL " in *" $w "*) ;; *) echo "bench.sh: unknown workload $w (one of: $ALL)" >&2; exit 2 ;; esac
done

if [ -z "${BENCH_DIR:-}" ]; then
  BENCH_DIR="${TMPDIR:-/tmp}/hoist-bench"
fi
mkdir -p "$BENCH_DIR"; BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
PORT="${BENCH_PORT:-5591}"; PORT2=$((PORT + 1))
REG="127.0.0.1:$PORT"; REG2="127.0.0.1:$PORT2"
CORPUS="$BENCH_DIR/corpus"; SCRATCH="$BENCH_DIR/scratch"; RESULTS="$BENCH_DIR/runs.tsv"
say() { echo "bench: $*" >&2; }

# ---- tools -----------------------------------------------------------------------------------
missing=()
command -v skopeo >/dev/null || missing+=(skopeo)
[ -x /usr/bin/time ] || missing+=(time)
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
for t in zstd jq curl python3; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v ctr >/dev/null && say "note: ctr is installed but not driven by this script (it needs a running containerd)"

say "building hoist (release)"
(cd "$REPO" && cargo build --release -q -p hoist)
HOIST="${CARGO_TARGET_DIR:-$REPO/target}/release/hoist"
[ -x "$HOIST" ] || { say "no hoist binary at $HOIST"; exit 1; }

"$HERE/bench/make-corpus.sh" "$CORPUS" >/dev/null

# ---- registries ------------------------------------------------------------------------------
registry() { # registry PORT start|stop
  HOIST_REGISTRY_PORT="$1" HOIST_REGISTRY_DIR="$BENCH_DIR/registry-$1" "$REPO/scripts/registry.sh" "$2" >/dev/null
}
fresh_push_registry() {
  registry "$PORT2" stop
  rm -rf "$BENCH_DIR/registry-$PORT2"
  registry "$PORT2" start
}
cleanup() { registry "$PORT" stop || true; registry "$PORT2" stop || true; rm -rf "$SCRATCH"; }
trap cleanup EXIT
registry "$PORT" start

ACCEPT='application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json'
remote_digest() {
  curl -sfI -H "Accept: $ACCEPT" "http://$1/v2/$2/manifests/latest" | tr -d '\r' \
    | awk 'tolower($1) == "docker-content-digest:" {print $2}'
}
for img in big many zstd v1 v2; do
  want="$(jq -r '.manifests[0].digest' "$CORPUS/$img/index.json")"
  if [ "$(remote_digest "$REG" "bench/$img" || true)" != "$want" ]; then
    say "seeding $REG/bench/$img"
    skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$CORPUS/$img:latest" "docker://$REG/bench/$img:latest"
    [ "$(remote_digest "$REG" "bench/$img")" = "$want" ] || { say "seeded bench/$img has the wrong digest"; exit 1; }
  fi
done

# ---- measuring -------------------------------------------------------------------------------
lo_bytes() { sed -n 's/^ *lo: *\([0-9]*\).*/\1/p' /proc/net/dev; }
: >"$RESULTS"
# measure WORKLOAD TOOL RUN CMD... : one timed run, appended to runs.tsv
measure() {
  local w="$1" tool="$2" run="$3"; shift 3
  local tf="$SCRATCH/time.out" lo0 lo1 rc=0
  lo0="$(lo_bytes)"
  /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout 900 "$@" >"$SCRATCH/cmd.log" 2>&1 || rc=$?
  lo1="$(lo_bytes)"
  local wall user sys rss
  read -r wall user sys rss < <(grep -E '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$' "$tf" | tail -n1) || true
  if [ "$rc" -ne 0 ]; then
    say "$w/$tool run $run FAILED (exit $rc): $(tail -n 3 "$SCRATCH/cmd.log" | tr '\n' ' ')"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$tool" "$run" "${wall:-0}" "${user:-0}" "${sys:-0}" \
    "${rss:-0}" "$((lo1 - lo0))" "$rc" >>"$RESULTS"
  say "$w $tool #$run: ${wall:-?} s wall, $(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN{print u+s}') s cpu, ${rss:-?} KiB rss, exit $rc"
}
fresh() { rm -rf "$SCRATCH/t"; mkdir -p "$SCRATCH/t"; echo "$SCRATCH/t"; }

# the peers
skopeo_pull() { skopeo copy -q --src-tls-verify=false "docker://$REG/bench/$1:latest" "oci:$2/out:latest"; }
skopeo_push() { skopeo copy -q --dest-tls-verify=false "oci:$CORPUS/big:latest" "docker://$REG2/bench/big:latest"; }
tar_floor() { local t; for t in "$CORPUS"/big-tars/big{1,2,3,4}.tar; do tar -xf "$t" -C "$1"; done; }
# the registry's ingest floor: every blob of big (and the manifest) PUT monolithically, in parallel
curl_ingest() {
  local m blob loc pids=()
  m="$(jq -r '.manifests[0].digest' "$CORPUS/big/index.json")"
  for blob in $(jq -r '.config.digest, .layers[].digest' "$CORPUS/big/blobs/sha256/${m#sha256:}"); do
    (
      loc="$(curl -sf -X POST -D - -o /dev/null "http://$REG2/v2/bench/big/blobs/uploads/" \
        | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')"
      case "$loc" in http*) ;; *) loc="http://$REG2$loc" ;; esac
      case "$loc" in *\?*) loc="$loc&digest=$blob" ;; *) loc="$loc?digest=$blob" ;; esac
      curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$CORPUS/big/blobs/sha256/${blob#sha256:}" "$loc"
    ) & pids+=($!)
  done
  local p rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [ "$rc" -eq 0 ] || return 1
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$CORPUS/big/blobs/sha256/${m#sha256:}" "http://$REG2/v2/bench/big/manifests/latest"
}
# v1 and v2 into one store: two processes at once, or one after the other
v1v2_parallel() {
  "$HOIST" -q --root "$1" pull --no-unpack "$REG/bench/v1:latest" & local a=$!
  "$HOIST" -q --root "$1" pull --no-unpack "$REG/bench/v2:latest" & local b=$!
  local rc=0; wait "$a" || rc=1; wait "$b" || rc=1; return "$rc"
}
v1v2_sequential() {
  "$HOIST" -q --root "$1" pull --no-unpack "$REG/bench/v1:latest" &&
    "$HOIST" -q --root "$1" pull --no-unpack "$REG/bench/v2:latest"
}
export -f skopeo_pull skopeo_push tar_floor curl_ingest v1v2_parallel v1v2_sequential
export REG REG2 CORPUS HOIST
# the unique bytes of v1 and v2 (manifests, configs, layers; shared layers once)
UNIQUE_V1V2="$(for img in v1 v2; do
    m="$(jq -r '.manifests[0].digest' "$CORPUS/$img/index.json")"
    jq -r '.manifests[0] | "\(.digest) \(.size)"' "$CORPUS/$img/index.json"
    jq -r '(.config, .layers[]) | "\(.digest) \(.size)"' "$CORPUS/$img/blobs/sha256/${m#sha256:}"
  done | sort -u | awk '{s += $2} END {print s}')"
export UNIQUE_V1V2

PUSH_STORE="$BENCH_DIR/push-store"
push_store_ready() {
  [ -f "$PUSH_STORE/.ready" ] && return 0
  rm -rf "$PUSH_STORE"
  "$HOIST" -q --root "$PUSH_STORE" pull --no-unpack "$REG/bench/big:latest"
  "$HOIST" -q --root "$PUSH_STORE" tag "$REG/bench/big:latest" "$REG2/bench/big:latest"
  touch "$PUSH_STORE/.ready"
}

run_workload() {
  local w="$1" i d
  for i in $(seq 1 "$RUNS"); do
    case "$w" in
      copy-big|copy-many|copy-zstd)
        local img="${w#copy-}"
        d="$(fresh)"; measure "$w" hoist "$i" "$HOIST" -q --root "$d/store" copy "docker://$REG/bench/$img:latest" "oci:$d/out:latest"
        d="$(fresh)"; measure "$w" skopeo "$i" bash -c 'skopeo_pull "$1" "$2"' _ "$img" "$d" ;;
      pull-nounpack-big)
        d="$(fresh)"; measure "$w" hoist "$i" "$HOIST" -q --root "$d/store" pull --no-unpack "$REG/bench/big:latest"
        d="$(fresh)"; measure "$w" skopeo "$i" bash -c 'skopeo_pull big "$1"' _ "$d" ;;
      pull-big)
        d="$(fresh)"; measure "$w" hoist "$i" "$HOIST" -q --root "$d/store" pull "$REG/bench/big:latest"
        d="$(fresh)"; measure "$w" tar-x-floor "$i" bash -c 'tar_floor "$1"' _ "$d" ;;
      push-big)
        push_store_ready
        fresh_push_registry; measure "$w" hoist "$i" "$HOIST" -q --root "$PUSH_STORE" push "$REG2/bench/big:latest"
        fresh_push_registry; measure "$w" skopeo "$i" bash -c skopeo_push
        fresh_push_registry; measure "$w" curl-ingest-floor "$i" bash -c curl_ingest ;;
      repush-big)
        push_store_ready
        if [ "$i" = 1 ]; then fresh_push_registry; skopeo_push; fi
        measure "$w" hoist "$i" "$HOIST" -q --root "$PUSH_STORE" push "$REG2/bench/big:latest"
        measure "$w" skopeo "$i" bash -c skopeo_push ;;
      shared-v1v2)
        d="$(fresh)"; measure "$w" hoist "$i" bash -c 'v1v2_parallel "$1"' _ "$d/store"
        d="$(fresh)"; measure "$w" hoist-sequential "$i" bash -c 'v1v2_sequential "$1"' _ "$d/store" ;;
    esac
  done
}

mkdir -p "$SCRATCH"
STARTED="$(date -u '+%Y-%m-%d %H:%M UTC')"
for w in $WORKLOADS; do
  say "== $w ($RUNS runs)"
  run_workload "$w"
done
cp "$RESULTS" "$BENCH_DIR/runs-$(date -u +%Y%m%dT%H%M%S).tsv"

# ---- the report ------------------------------------------------------------------------------
MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
VERSIONS="hoist $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), $(skopeo --version), docker-registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $3}'), $(tar --version | head -n1)"
python3 - "$RESULTS" "$REPO/BENCHMARKS.md" "$STARTED" "$MACHINE" "$CMDLINE" "$RUNS" "$VERSIONS" "$CORPUS/corpus.tsv" <<'PY'
import sys, statistics as st, os, re
runs_f, md_f, started, machine, cmdline, nruns, versions, corpus_f = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(runs_f) if l.strip()]
order, data = [], {}
for w, tool, run, wall, user, sys_, rss, lo, rc in rows:
    if w not in data:
        data[w] = {}; order.append(w)
    data[w].setdefault(tool, []).append(dict(run=int(run), wall=float(wall), cpu=float(user) + float(sys_),
                                             rss=int(rss) / 1024, lo=int(lo) / 1e6, rc=int(rc)))
desc = {
 "copy-big": "cold `hoist copy docker://…/big oci:DIR` vs `skopeo copy docker://…/big oci:DIR`",
 "copy-many": "cold copy of `many` (40 small layers) to an OCI directory, hoist vs skopeo",
 "copy-zstd": "cold copy of `zstd` (big's layers in zstd) to an OCI directory, hoist vs skopeo",
 "pull-nounpack-big": "cold `hoist pull --no-unpack` of big (verified blobs in a fresh store) vs skopeo's copy to an OCI directory",
 "pull-big": "cold `hoist pull` of big (fresh store, layers unpacked) vs the extraction floor: `tar -x` of big's four tars into an empty directory on the same disk",
 "push-big": "`hoist push` of big from its store to an empty registry vs `skopeo copy oci:DIR docker://…` and vs the registry's ingest floor (curl PUTs every blob monolithically, in parallel); the registry is restarted empty before every run",
 "repush-big": "push of big to a registry that already has everything (hoist push vs skopeo copy)",
 "shared-v1v2": "`hoist pull --no-unpack` of v1 and v2 into one fresh store by two processes at the same time, against the same two pulls one after the other; v1 and v2 share 3 of 4 layers, and their unique blob bytes are %.1f MB: the lo MB column (which also counts requests and headers) should stay near that" % (int(os.environ.get("UNIQUE_V1V2", "0")) / 1e6),
}
def fmt(x, p=2): return f"{x:.{p}f}"
out = []
out.append(f"Run {started} on {machine}.  ")
out.append(f"Command: `{cmdline}` ({nruns} runs per tool, alternating A B A B).  ")
out.append(f"Versions: {versions}.")
out.append("")
out.append("The machine is noisy: 2 cores shared with other builds that may run during the benchmark, so")
out.append("single runs can be off by tens of percent; read the medians and the min–max spread together.")
out.append("\"Cold\" means a fresh store or output directory every run; the registry's files stay in the page")
out.append("cache (the network is loopback), so these numbers are CPU- and disk-bound, not network-bound.")
out.append("`lo MB` is the traffic on the loopback interface during the run (both directions, any process), a")
out.append("rough stand-in for bytes fetched. containerd's `ctr` is not available on this machine, so the")
out.append("`ctr images pull` comparison is not measured here.")
out.append("")
out.append("| workload | tool | wall s median (min–max) | CPU s (user+sys) | peak RSS MiB | lo MB | hoist/peer wall, median of pairs (each pair) | failed runs |")
out.append("|---|---|---|---|---|---|---|---|")
for w in order:
    tools = data[w]
    h = tools.get("hoist", [])
    for tool, rs in tools.items():
        ok = [r for r in rs if r["rc"] == 0]
        fails = len(rs) - len(ok)
        if ok:
            walls = [r["wall"] for r in ok]
            cell = f"{fmt(st.median(walls))} ({fmt(min(walls))}–{fmt(max(walls))})"
            cpu = fmt(st.median([r["cpu"] for r in ok]))
            rss = fmt(st.median([r["rss"] for r in ok]), 1)
            lo = fmt(st.median([r["lo"] for r in ok]), 0)
        else:
            cell = cpu = rss = lo = "—"
        ratio = ""
        if tool != "hoist":
            byrun = {r["run"]: r for r in ok}
            pairs = [hr["wall"] / byrun[hr["run"]]["wall"] for hr in h
                     if hr["rc"] == 0 and hr["run"] in byrun and byrun[hr["run"]]["wall"] > 0]
            if pairs:
                ratio = f"**{fmt(st.median(pairs))}** ({', '.join(fmt(p) for p in pairs)})"
        out.append(f"| {w} | {tool} | {cell} | {cpu} | {rss} | {lo} | {ratio} | {fails or ''} |")
out.append("")
out.append("Corpus (`scripts/bench/make-corpus.sh`):")
out.append("")
out.append("| image | layers | blob MB | tar MB |")
out.append("|---|---|---|---|")
for l in list(open(corpus_f))[1:]:
    img, n, b, t = l.split()
    out.append(f"| {img} | {n} | {int(b)/1e6:.1f} | {int(t)/1e6:.1f} |")
out.append("")
for w in order:
    out.append(f"### {w}")
    out.append("")
    out.append(desc.get(w, w) + ".")
    out.append("")
    out.append("| tool | run | wall s | CPU s | peak RSS MiB | lo MB | exit |")
    out.append("|---|---|---|---|---|---|---|")
    allr = sorted(((r["run"], t, r) for t, rs in data[w].items() for r in rs), key=lambda x: x[0])
    for run, t, r in allr:
        out.append(f"| {t} | {run} | {fmt(r['wall'])} | {fmt(r['cpu'])} | {fmt(r['rss'],1)} | {fmt(r['lo'],0)} | {r['rc']} |")
    out.append("")
block = "<!-- bench:results:begin (written by scripts/bench.sh) -->\n" + "\n".join(out) + "\n<!-- bench:results:end -->\n"
text = open(md_f).read() if os.path.exists(md_f) else ""
pat = re.compile(r"<!-- bench:results:begin.*?<!-- bench:results:end -->\n?", re.S)
if pat.search(text):
    text = pat.sub(lambda m: block, text)
else:
    text = text + ("\n" if text else "") + "## Results\n\n" + block
open(md_f, "w").write(text)
print("\n".join(out[:out.index("Corpus (`scripts/bench/make-corpus.sh`):")]))
PY
say "results in $REPO/BENCHMARKS.md (raw runs: $RESULTS)"
