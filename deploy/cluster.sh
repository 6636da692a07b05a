#!/usr/bin/env bash
# A multi-node Skiff cluster under docker-compose (deploy/docker-compose.yml).
#
#   deploy/cluster.sh up       builds the release binaries and the images (a Debian base from
#                              debootstrap imported into Docker, then the control, node and
#                              registry images; nothing is pulled), makes the CA and the
#                              administrator's, scheduler's, controller manager's and API
#                              servers' proxies' certificate kubeconfigs, starts the
#                              cluster, pushes the pause,
#                              example and DNS images to its registry, applies the join
#                              bindings and the cluster DNS, makes the nodes' bootstrap token,
#                              and waits for the three nodes (which get their certificates
#                              through CSRs) to be Ready; prints the KUBECONFIG line
#   deploy/cluster.sh down     removes the containers, their network and volumes
#   deploy/cluster.sh status   the containers, nodes and pods
#   deploy/cluster.sh test     runs the cluster tests (tests/tests/cluster.rs, on a cluster of
#                              their own, from debug binaries)
#
# Settings (environment): SKIFF_PROJECT (compose project, default skiff), SKIFF_API_PORT
# (the API servers' load-balanced address on the host's loopback, default 16443),
# SKIFF_REGISTRY_PORT (the registry on the host's loopback, default 15000),
# SKIFF_NODE_MONITOR_GRACE (the controller managers' --node-monitor-grace-period, default 40s),
# SKIFF_TOLERATION_SECONDS (the API servers' --default-not-ready-toleration-seconds and
# --default-unreachable-toleration-seconds: how long pods stay on a lost node, default 300),
# SKIFF_SUBNET (the cluster's Docker network, default 172.30.0.0/24), SKIFF_BIN_DIR (take
# Skiff's binaries from there, already built, instead of building release ones into
# target/release).
set -euo pipefail
cd "$(dirname "$0")"
DEPLOY=$(pwd)
ROOT=$(cd .. && pwd)
export SKIFF_PROJECT="${SKIFF_PROJECT:-skiff}"
export SKIFF_API_PORT="${SKIFF_API_PORT:-16443}"
export SKIFF_REGISTRY_PORT="${SKIFF_REGISTRY_PORT:-15000}"
export SKIFF_STATE="${SKIFF_STATE:-$DEPLOY/.state/$SKIFF_PROJECT}"
STATE="$SKIFF_STATE"
export KUBECONFIG="$STATE/admin.kubeconfig"
BIN="${SKIFF_BIN_DIR:-$ROOT/target/release}"
compose() { docker-compose -p "$SKIFF_PROJECT" -f "$DEPLOY/docker-compose.yml" "$@"; }
say() { echo "[cluster] $*" >&2; }

need() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
}

# The Debian base every image starts from: a minimal debootstrap, imported.
base_image() {
  if docker image inspect skiff/base:bookworm >/dev/null 2>&1; then
    return
  fi
  need debootstrap
  local root
  root=$(mktemp -d)
  say "building the Debian base image (debootstrap)"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -rf "$root" "$root.log"; return 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import - skiff/base:bookworm >/dev/null
  rm -rf "$root" "$root.log"
}

# One image from deploy/images/NAME with the given binaries in its context.
image() {
  local name=$1
  shift
  local ctx
  ctx=$(mktemp -d)
  cp -r "$DEPLOY/images/$name/." "$ctx/"
  # Without debug sections: the images stay small whichever profile built the binaries.
  for b in "$@"; do objcopy --strip-debug "$BIN/$b" "$ctx/$b"; done
  say "building skiff/$name:dev"
  docker build -q -t "skiff/$name:dev" "$ctx" >/dev/null
  rm -rf "$ctx"
}

images() {
  if [ -z "${SKIFF_BIN_DIR:-}" ]; then
    (cd "$ROOT" && cargo build --release --bins)
  fi
  base_image
  image control skiff skiff-apiserver skiff-kms skiff-proxy skiff-scheduler skiff-controller-manager
  image node skiff skiff-kubelet skiff-proxy skiff-csi
  image registry
}

# A client certificate from the cluster CA: CN, O (empty for none), pki/NAME.{crt,key}.
client_cert() {
  local cn=$1 o=$2 name=$3 subj="/CN=$1"
  [ -z "$o" ] || subj="/O=$o/CN=$cn"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "$subj" -keyout "$STATE/pki/$name.key" -out "$STATE/pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
    -CAcreateserial -days 365 -out "$STATE/pki/$name.crt" \
    -extfile <(printf "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n") 2>/dev/null
  rm -f "$STATE/pki/$name.csr"
}

kubeconfig() { # server, file, certificate name (pki/NAME.crt and .key)
  local ca cert key
  ca=$(base64 -w0 <"$STATE/pki/ca.crt")
  cert=$(base64 -w0 <"$STATE/pki/$3.crt")
  key=$(base64 -w0 <"$STATE/pki/$3.key")
  cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: $1
    certificate-authority-data: $ca
users:
- name: $3
  user:
    client-certificate-data: $cert
    client-key-data: $key
contexts:
- name: skiff
  context:
    cluster: skiff
    user: $3
current-context: skiff
EOF
  chmod 600 "$2"
}

# The cluster's CA (shared by both API servers, and the controller managers' signing CA), the
# certificates and kubeconfigs of the administrator, the schedulers
# (`system:kube-scheduler`), the controller managers (`system:kube-controller-manager`) and
# the proxies in the API servers' containers (`system:kube-proxy`, talking to their own API
# server), and the load balancer's configuration. Nodes get theirs through CSRs (see `up`).
state() {
  mkdir -p "$STATE/pki"
  chmod 755 "$STATE"
  if [ ! -f "$STATE/pki/ca.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=skiff-ca" -keyout "$STATE/pki/ca.key" -out "$STATE/pki/ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/O=system:masters/CN=skiff-admin" -keyout "$STATE/pki/admin.key" -out "$STATE/pki/admin.csr" 2>/dev/null
    openssl x509 -req -in "$STATE/pki/admin.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
      -CAcreateserial -days 3650 -out "$STATE/pki/admin.crt" \
      -extfile <(printf "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n") 2>/dev/null
    rm -f "$STATE/pki/admin.csr"
    # The API servers run as root in their containers and read the key from this mount.
    chmod 644 "$STATE/pki/ca.key"
  fi
  [ -f "$STATE/pki/scheduler.crt" ] || client_cert system:kube-scheduler "" scheduler
  [ -f "$STATE/pki/controller-manager.crt" ] ||
    client_cert system:kube-controller-manager "" controller-manager
  [ -f "$STATE/pki/proxy.crt" ] || client_cert system:kube-proxy "" proxy
  # The key both API servers sign ServiceAccount tokens with (and check them by): a token one
  # issued is good at the other, as behind any load-balanced control plane.
  if [ ! -f "$STATE/pki/sa.key" ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$STATE/pki/sa.key" 2>/dev/null
    chmod 644 "$STATE/pki/sa.key"
  fi
  # Secrets encryption: the KMS plugins' key-encryption key (one, shared by both API servers'
  # plugins) and the API servers' EncryptionConfiguration. Read by root in the containers.
  mkdir -p "$STATE/kms"
  if [ ! -f "$STATE/kms/keys.json" ]; then
    printf '{"primary":"skiff-1","keys":[{"id":"skiff-1","secret":"%s","created":"%s"}]}\n' \
      "$(head -c 32 /dev/urandom | base64 -w0)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$STATE/kms/keys.json"
    chmod 644 "$STATE/kms/keys.json"
  fi
  cat >"$STATE/encryption-config.yaml" <<'EOF'
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms:
          apiVersion: v2
          name: skiff-kms
          endpoint: unix:///run/skiff-kms/kms.sock
          timeout: 3s
      - identity: {}
EOF
  kubeconfig "https://lb:6443" "$STATE/scheduler.kubeconfig" scheduler
  kubeconfig "https://lb:6443" "$STATE/controller-manager.kubeconfig" controller-manager
  kubeconfig "https://127.0.0.1:6443" "$STATE/proxy.kubeconfig" proxy
  kubeconfig "https://127.0.0.1:$SKIFF_API_PORT" "$STATE/admin.kubeconfig" admin
  # The control-plane containers run as root and read them from the mount.
  chmod 644 "$STATE/scheduler.kubeconfig" "$STATE/controller-manager.kubeconfig" \
    "$STATE/proxy.kubeconfig"
  cat >"$STATE/haproxy.cfg" <<'EOF'
global
  log stdout format raw local0 warning
resolvers docker
  nameserver dns 127.0.0.11:53
  hold valid 1s
# A connection that cannot reach its API server is tried on the other at once (redispatch on
# every retry); a server leaves the rotation after two failed /readyz checks a second apart.
defaults
  mode tcp
  log global
  timeout connect 1s
  timeout client 1h
  timeout server 1h
  retries 2
  option redispatch 1
  default-server init-addr last,libc,none resolvers docker check check-ssl verify none inter 1s fall 2 rise 1
frontend api
  bind :6443
  default_backend apiservers
backend apiservers
  option httpchk GET /readyz
  server apiserver-1 apiserver-1:6443
  server apiserver-2 apiserver-2:6443
EOF
}

# The cluster network's bridge on this machine (Docker names it br-<network id>).
bridge() {
  local id
  id=$(docker network inspect -f '{{.Id}}' "${SKIFF_PROJECT}_cluster" 2>/dev/null) || return 1
  echo "br-${id:0:12}"
}

# Pods on different nodes talk with their own addresses (10.244.x.y), routed node to node over
# the cluster network. Docker drops every frame on an internal network's bridge whose source
# or destination is outside the network's subnet (its isolation rules see bridged traffic, as
# br_netfilter passes it through iptables), so pod traffic between the node containers is
# accepted first in DOCKER-USER, Docker's chain for its users' rules; only traffic that stays
# on this bridge. Removed by `down`.
pod_rule() { # -C | -I | -D
  local br
  br=$(bridge) || return 1
  iptables "$1" DOCKER-USER -i "$br" -o "$br" -j ACCEPT 2>/dev/null
}

wait_until() { # seconds, description, command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "timed out waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# Three nodes Ready and without taints: the node lifecycle controller lifts the not-ready
# taint a node registers with only after it reports Ready, and until then nothing lands there.
nodes_ready() {
  [ "$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}{"\n"}{end}' | grep -cE '^True/(\[\])?$')" -eq 3 ]
}

up() {
  need docker-compose openssl binutils
  images
  state
  local started=$SECONDS t0
  t0=$(date +%s.%N)
  compose up -d etcd-1 etcd-2 etcd-3 apiserver-1 apiserver-2 lb registry \
    scheduler-1 scheduler-2 controller-manager-1 controller-manager-2
  wait_until 120 "the API servers" kubectl get --raw /readyz
  "$BIN/skiff" images --registry="127.0.0.1:$SKIFF_REGISTRY_PORT" >/dev/null
  "$BIN/skiff" addons --server=https://lb:6443 --ca-file="$STATE/pki/ca.crt" --dns-replicas=2 --shared-storage \
    --dns-image="registry:5000/skiff/dns:$("$BIN/skiff" --version | cut -d' ' -f2)" |
    kubectl apply -f - >/dev/null
  # The nodes' join token: CA-HASH::ID.SECRET, a bootstrap token that may only ask for
  # certificates (nodes that have theirs no longer need it).
  "$BIN/skiff" token create --kubeconfig="$KUBECONFIG" --ttl=24h >"$STATE/node-token"
  pod_rule -C || pod_rule -I
  compose up -d node-a node-b node-c
  wait_until 180 "three Ready nodes without taints" nodes_ready
  local t1
  t1=$(date +%s.%N)
  local took
  took=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
  echo "$took" >"$STATE/up-seconds"
  say "all three nodes Ready and schedulable ${took} s after the control plane was started ($((SECONDS - started)) s)"
  echo "The cluster is up. Point kubectl at it with:"
  echo "  export KUBECONFIG=$KUBECONFIG"
  echo "Images: 127.0.0.1:$SKIFF_REGISTRY_PORT from this machine, registry:5000 from the nodes (e.g. registry:5000/skiff/httpd)."
}

down() {
  while pod_rule -C; do pod_rule -D; done
  compose down -v --remove-orphans
  rm -rf "$STATE"
}

status() {
  compose ps
  if [ -f "$KUBECONFIG" ]; then
    kubectl get nodes -o wide || true
    kubectl get pods -A -o wide || true
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  test)
    # The tests bring up a cluster of their own (another project name, ports and network)
    # from the binaries in target/debug (or $SKIFF_BIN_DIR), and remove it afterwards. They
    # also run the SDK's admission_validator example as a pod (examples/ there).
    cd "$ROOT"
    [ -n "${SKIFF_BIN_DIR:-}" ] || cargo build --workspace --bins --examples
    # This cluster's settings are not theirs.
    env -u SKIFF_STATE -u KUBECONFIG cargo test --workspace --test cluster -- --nocapture ;;
  *) echo "usage: $0 up|down|status|test" >&2; exit 2 ;;
esac
