# Sourced by the benchmarks that run a node (`berth up` as root) under $WORK with its own
# container bridge $BRIDGE on $SUBNET: end_node removes what such a run leaves behind.
#
# The node's containers outlive berth (as they outlive an agent restart), so every process in
# the cgroups of its tasks is ended first, then the shims, then the cgroups; then the peers'
# podman state under $WORK, the mounts under $WORK, the bridge and its NAT rule.
end_node() {
  local f id d
  for f in "$WORK"/berth/node/state/*.json; do
    [ -e "$f" ] || continue
    id=$(basename "$f" .json)
    for d in /sys/fs/cgroup/*/berth/"$id" /sys/fs/cgroup/berth/"$id"; do
      [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
    done
  done
  for p in $(pgrep -f "shim.*$WORK"); do kill -9 "$p" 2>/dev/null; done
  sleep 0.5
  for f in "$WORK"/berth/node/state/*.json; do
    [ -e "$f" ] || continue
    id=$(basename "$f" .json)
    for d in /sys/fs/cgroup/*/berth/"$id" /sys/fs/cgroup/berth/"$id"; do
      [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  if command -v podman >/dev/null; then
    podman --root "$WORK/podman" --runroot "$WORK/podman-run" rm -af -t 0 >/dev/null 2>&1
    podman --root "$WORK/podman" --runroot "$WORK/podman-run" system reset -f >/dev/null 2>&1
  fi
  grep "$WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  nft delete table ip "berth-$BRIDGE" 2>/dev/null || true
}
