#!/usr/bin/env bash
# registry.sh start|stop|url — a real CNCF distribution registry (Debian's docker-registry) on
# 127.0.0.1 for the demo and the benchmark. Tests do not use this: they start their own registries
# (free ports, temp dirs) from the test-support crate.
#
#   HOIST_REGISTRY_PORT  port (default 5555)
#   HOIST_REGISTRY_DIR   state directory (default ${TMPDIR:-/tmp}/hoist-registry-$PORT)
#
# The registry reads every REGISTRY_* environment variable as configuration, so it is started with
# none of them: its config.yml is its only input.
set -euo pipefail
PORT="${HOIST_REGISTRY_PORT:-5555}"
DIR="${HOIST_REGISTRY_DIR:-${TMPDIR:-/tmp}/hoist-registry-$PORT}"
BIN=/usr/bin/docker-registry
PIDFILE="$DIR/registry.pid"
URL="http://127.0.0.1:$PORT"

log() { echo "registry.sh: $*" >&2; }

alive() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  [ -x "$BIN" ] || "$(dirname "$0")/install-deps.sh"
  if alive && curl -sf -o /dev/null --max-time 2 "$URL/v2/"; then
    log "already running on $URL"; echo "$URL"; return 0
  fi
  mkdir -p "$DIR/storage"
  cat >"$DIR/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/storage
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
  secret: hoist-local-$PORT
YAML
  local unset_args=()
  for v in $(compgen -e); do case "$v" in REGISTRY_*) unset_args+=(-u "$v");; esac; done
  nohup setsid env ${unset_args[@]+"${unset_args[@]}"} "$BIN" serve "$DIR/config.yml" >>"$DIR/registry.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null --max-time 1 "$URL/v2/"; then log "up on $URL (dir $DIR)"; echo "$URL"; return 0; fi
    alive || { tail -n 20 "$DIR/registry.log" >&2; log "registry exited"; return 1; }
    sleep 0.1
  done
  log "no answer from $URL/v2/ within 10 s (log: $DIR/registry.log)"; return 1
}

stop() {
  if alive; then kill "$(cat "$PIDFILE")"; log "stopped"; fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) echo "usage: registry.sh start|stop|url" >&2; exit 2 ;;
esac
