#!/usr/bin/env bash
# A working Skiff cluster on this machine, in one command.
#
#   deploy/quickstart.sh [up]    installs the Debian packages Skiff needs, builds the release
#                                binaries, starts `skiff server` (etcd, a registry with the
#                                pause, example and DNS images, the control plane, the cluster
#                                DNS and this machine as a node) and prints the KUBECONFIG line
#   deploy/quickstart.sh down    stops it: pods, rules, routes, mounts and processes go
#   deploy/quickstart.sh status  says whether it runs, and its nodes and pods
#
# State lives in $SKIFF_HOME (default /var/lib/skiff); extra `skiff server` flags can be given
# in $SKIFF_SERVER_ARGS. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${SKIFF_HOME:-/var/lib/skiff}"
PID_FILE="$HOME_DIR/skiff.pid"
OUT="$HOME_DIR/skiff.out"

running() {
  [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

stop() {
  if ! running; then
    rm -f "$PID_FILE"
    echo "skiff server is not running"
    return 0
  fi
  pid=$(cat "$PID_FILE")
  kill -TERM "$pid"
  # skiff server removes the node's pods and rules, then stops its parts in reverse order.
  for _ in $(seq 1 900); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "skiff server (pid $pid) did not stop within 90 s; see $OUT" >&2
    return 1
  fi
  rm -f "$PID_FILE"
  echo "skiff server stopped"
}

case "${1:-up}" in
  down) stop; exit ;;
  status)
    if running; then
      echo "skiff server is running (pid $(cat "$PID_FILE")); KUBECONFIG=$HOME_DIR/kubeconfig.yaml"
      KUBECONFIG="$HOME_DIR/kubeconfig.yaml" kubectl get nodes -o wide
      KUBECONFIG="$HOME_DIR/kubeconfig.yaml" kubectl get pods -A -o wide
    else
      echo "skiff server is not running"
      exit 3
    fi
    exit ;;
  up) ;;
  *) echo "usage: $0 [up|down|status]" >&2; exit 2 ;;
esac

if running; then
  echo "skiff server already runs (pid $(cat "$PID_FILE")). Point kubectl at it with:"
  echo "  export KUBECONFIG=$HOME_DIR/kubeconfig.yaml"
  exit 0
fi

scripts/install-deps
cargo build --release --bins
BIN="${CARGO_TARGET_DIR:-target}/release"
"$BIN/skiff" check

mkdir -p "$HOME_DIR"
# shellcheck disable=SC2086 # extra flags are words
setsid "$BIN/skiff" server --data-dir="$HOME_DIR" ${SKIFF_SERVER_ARGS:-} \
  >"$OUT" 2>&1 </dev/null &
echo $! >"$PID_FILE"

for _ in $(seq 1 1200); do
  if grep -q "export KUBECONFIG=" "$OUT"; then
    break
  fi
  if ! running; then
    echo "skiff server exited:" >&2
    tail -n 30 "$OUT" >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep -q "export KUBECONFIG=" "$OUT"; then
  echo "skiff server did not come up within 2 minutes; see $OUT" >&2
  exit 1
fi
export KUBECONFIG="$HOME_DIR/kubeconfig.yaml"
for _ in $(seq 1 600); do
  [ -n "$(kubectl get nodes -o name 2>/dev/null)" ] && break
  sleep 0.1
done
kubectl wait --for=condition=Ready nodes --all --timeout=120s >/dev/null
registry=$(grep -o '[^ ]*/skiff/httpd:latest' "$OUT" | head -n 1)
sed -n '/^Skiff is running/,$p' "$OUT"
cat <<EOF

Try it:
  export KUBECONFIG=$KUBECONFIG
  kubectl create deployment web --image=${registry%:latest} --replicas=3
  kubectl expose deployment web --port=80
  kubectl get pods -o wide
  kubectl run client --image=${registry%/skiff/httpd:latest}/skiff/busybox -- sleep 3600
  kubectl exec client -- wget -q -O - http://web/
  kubectl logs -l app=web

Stop it all with: $0 down
EOF
