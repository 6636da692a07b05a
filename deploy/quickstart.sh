#!/usr/bin/env bash
# Brings up Skiff on this machine: etcd and skiff-apiserver on loopback, state under
# $SKIFF_HOME (default ~/.skiff). `deploy/quickstart.sh down` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${SKIFF_HOME:-$HOME/.skiff}"
PORT="${SKIFF_PORT:-6443}"
ETCD_PORT="${SKIFF_ETCD_PORT:-2379}"
mkdir -p "$HOME_DIR"

stop() {
  for name in skiff-apiserver etcd; do
    f="$HOME_DIR/$name.pid"
    if [ -f "$f" ]; then
      pid=$(cat "$f")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      rm -f "$f"
      echo "stopped $name"
    fi
  done
}

case "${1:-up}" in
  down) stop; exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac

scripts/install-deps
cargo build --release --bins
stop >/dev/null

etcd --name skiff --data-dir "$HOME_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "skiff=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level warn \
  >"$HOME_DIR/etcd.log" 2>&1 &
echo $! >"$HOME_DIR/etcd.pid"

target/release/skiff-apiserver --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --secure-port "$PORT" --data-dir "$HOME_DIR/apiserver" \
  >"$HOME_DIR/apiserver.log" 2>&1 &
echo $! >"$HOME_DIR/skiff-apiserver.pid"

for _ in $(seq 1 100); do
  if [ -f "$HOME_DIR/apiserver/admin.kubeconfig" ] && curl -skf "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
    echo "Skiff is up. Point kubectl at it with:"
    echo "  export KUBECONFIG=$HOME_DIR/apiserver/admin.kubeconfig"
    exit 0
  fi
  sleep 0.2
done
echo "skiff-apiserver did not become ready; see $HOME_DIR/apiserver.log" >&2
exit 1
