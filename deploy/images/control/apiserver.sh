#!/bin/bash
# An API server's container: its KMS plugin, a skiff-proxy, and skiff-apiserver (given this
# script's arguments), stopped in the reverse order on SIGTERM.
#
# Why a proxy here: the API server calls admission and conversion webhooks at their Service's
# endpoints, i.e. pod IPs, and the pod networks are routed only by the nodes' proxies. Running
# skiff-proxy in this container makes it what a control-plane node running kube-proxy is in
# Kubernetes: the other nodes' pod CIDRs routed to their InternalIPs over the cluster network
# (the same host-gateway routes the nodes use, so traffic stays on the project's network), and
# the Service rules, so ClusterIPs work here too. The proxy runs as `system:kube-proxy`
# (bound to `system:node-proxier`, which reads Services, EndpointSlices and Nodes) with a
# kubeconfig of its own that talks to this container's API server, and the container has only
# NET_ADMIN added, for its routes and nf_tables table. Its name is this container's host name,
# which no node has, so every node's pod CIDR is routed.
#
# Settings (environment): SKIFF_CLUSTER_CIDR (the pods' range, default 10.244.0.0/16),
# SKIFF_SERVICE_CIDR (the Service range, default 10.96.0.0/12).
set -euo pipefail
# As PID 1 the script ignores SIGTERM unless it handles it: remember it from the start.
stopping= api=
trap 'stopping=1; [ -z "$api" ] || kill -TERM "$api" 2>/dev/null || true' TERM INT
cluster_cidr=${SKIFF_CLUSTER_CIDR:-10.244.0.0/16}
service_cidr=${SKIFF_SERVICE_CIDR:-10.96.0.0/12}

mkdir -p /var/lib/skiff/apiserver /run/skiff-kms
cp /etc/skiff/pki/ca.crt /etc/skiff/pki/ca.key /var/lib/skiff/apiserver/

# Service addresses and pod networks no rule or route catches are discarded here rather than
# sent to Docker's gateway (as on the nodes): an interface that leads nowhere takes them, and
# the proxy's rules and its more specific pod routes still win. A locally sent packet is
# routed before the proxy's DNAT (nat OUTPUT) re-routes it to its pod. (A veth pair with
# nothing behind it: some kernels have no dummy interfaces.)
ip link add skiff-discard type veth peer name skiff-discard1 2>/dev/null || true
ip link set skiff-discard up
ip link set skiff-discard1 up
ip route replace "$service_cidr" dev skiff-discard
ip route replace "$cluster_cidr" dev skiff-discard

skiff-kms --listen=unix:///run/skiff-kms/kms.sock --keys-file=/etc/skiff/kms/keys.json &
kms=$!
for _ in $(seq 100); do
  [ -S /run/skiff-kms/kms.sock ] && break
  sleep 0.1
done

skiff-proxy --kubeconfig=/etc/skiff/proxy.kubeconfig --hostname-override="$(hostname)" \
  --cluster-cidr="$cluster_cidr" --pod-routes=true &
proxy=$!

skiff-apiserver "$@" &
api=$!
# SIGTERM (docker stop) goes to the API server first, so that requests it finishes while
# draining can still reach their webhooks; then to the proxy, whose rules and routes are
# removed as a node's are; then to the KMS plugin.
[ -z "$stopping" ] || kill -TERM "$api"

# Until one of them exits: the API server on SIGTERM, or any of the three on its own (the
# container then stops and Docker's restart policy brings it back whole).
status=0
wait -n -p exited "$api" "$proxy" "$kms" || status=$?
if [ -z "$stopping" ]; then
  case "${exited:-}" in
    "$api") echo "skiff-apiserver exited ($status)" >&2 ;;
    "$proxy") echo "skiff-proxy exited ($status); stopping the API server" >&2 ;;
    *) echo "skiff-kms exited ($status); stopping the API server" >&2 ;;
  esac
fi
[ -n "$stopping" ] || kill -TERM "$api" 2>/dev/null || true
# `wait` returns early when a trapped signal arrives, so wait until the process is gone.
while kill -0 "$api" 2>/dev/null; do wait "$api" || true; done
kill -TERM "$proxy" 2>/dev/null || true
while kill -0 "$proxy" 2>/dev/null; do wait "$proxy" || true; done
skiff-proxy --cleanup || echo "skiff-proxy --cleanup failed; rules or routes may remain" >&2
kill -TERM "$kms" 2>/dev/null || true
while kill -0 "$kms" 2>/dev/null; do wait "$kms" || true; done
if [ -n "$stopping" ]; then
  exit 0
fi
exit $((status == 0 ? 1 : status))
