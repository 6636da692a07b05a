#!/bin/sh
# Service addresses and pod networks no rule or route catches are discarded here rather than
# sent out of the container's default route (and off the machine): a interface that leads nowhere takes
# them, and the proxy's rules and the more specific pod routes still win. (A veth pair with
# nothing behind it: some kernels have no dummy interfaces.)
set -e
# /sys and the cgroup hierarchies come read-only into a container that is not privileged.
mount -o remount,rw /sys 2>/dev/null || true
mount -o remount,rw /proc/sys 2>/dev/null || true
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
  mountpoint -q "$d" && mount -o remount,bind,rw "$d" 2>/dev/null || true
done
ip link add skiff-discard type veth peer name skiff-discard1 2>/dev/null || true
ip link set skiff-discard up
ip link set skiff-discard1 up
ip route replace 10.96.0.0/12 dev skiff-discard
ip route replace 10.244.0.0/16 dev skiff-discard
exec /usr/local/bin/skiff agent "$@"
