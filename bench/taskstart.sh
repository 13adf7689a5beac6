#!/usr/bin/env bash
# Task start latency on this machine, image cached, single busybox container:
#   - berth: RunTask → DescribeTasks says RUNNING (berth-loadgen task-start: signed API calls,
#     polled every millisecond), networkMode none, bridge and awsvpc;
#   - peers in the same run, same image: `podman run -d --runtime runc` and `docker run -d`
#     (a dockerd started here with its own data root), each until the command returns with the
#     container started, network none and their default bridge.
# Needs root. usage: bench/taskstart.sh [runs]
#   BIN=path/to/berth: measure that binary (an earlier commit's, say) instead of building this
#   one (berth-loadgen is still built here); SKIP_PEERS=1: berth only; MODES="none bridge".
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-100}
PEER_RUNS=${PEER_RUNS:-30}
[ "$(id -u)" -eq 0 ] || { echo "bench/taskstart.sh needs root (it starts containers)" >&2; exit 1; }
cargo build --release -q -p berth-loadgen
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p berth
  BIN=target/release/berth
fi
WORK=$(mktemp -d /tmp/berth-taskstart.XXXXXX)
BRIDGE=bthbench0
SUBNET=10.216.0.0/24
PIDS=()
. bench/node-cleanup.sh
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  end_node
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" up --listen 127.0.0.1:0 --data-dir "$WORK/berth" --log warn \
  --local-node true --bridge-name "$BRIDGE" --bridge-subnet "$SUBNET" \
  --image-pull-behavior prefer-cached --registry-create-on-push true & PIDS+=($!)
for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$("$BIN" env --data-dir "$WORK/berth")"
HOST=${AWS_ENDPOINT_URL#http://}

# The image: static busybox with its applets.
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp"
cp /bin/busybox "$ROOTFS/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$ROOTFS/bin/$a"; done
"$BIN" push "$ROOTFS" "$HOST/bench:1" --data-dir "$WORK/berth" >/dev/null

for mode in ${MODES:-none bridge awsvpc}; do
  target/release/berth-loadgen task-start --image "$HOST/bench:1" --network-mode "$mode" --runs "$RUNS"
done

[ "${SKIP_PEERS:-}" = 1 ] && exit 0

# Peers get the same image as an OCI layout.
"$BIN" pull "$HOST/bench:1" "$WORK/layout" --data-dir "$WORK/berth" >/dev/null
skopeo copy -q "oci:$WORK/layout" "docker-archive:$WORK/image.tar:bench:1" >/dev/null
CMD=(/bin/sh -c "trap 'exit 0' TERM; while true; do sleep 1; done")
measure() { # label, then the command that starts one detached container and prints its id
  local label=$1; shift
  python3 - "$label" "$PEER_RUNS" "$@" <<'EOF'
import subprocess, sys, time
label, runs, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
lat = []
for i in range(runs + 2):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        print("%s: failed: %s" % (label, p.stderr.strip()[:300])); sys.exit(0)
    if i >= 2:
        lat.append(dt)
    rm = cmd[:cmd.index("run")] + ["rm", "-f", p.stdout.strip()]
    subprocess.run(rm, capture_output=True)
lat.sort()
pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]
print("%s, %d runs: p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  min %.1f ms" % (label, runs, pct(.5), pct(.9), pct(.99), lat[0]))
EOF
}

if command -v podman >/dev/null; then
  P=(podman --root "$WORK/podman" --runroot "$WORK/podman-run" --runtime runc)
  "${P[@]}" load -q -i "$WORK/image.tar" >/dev/null
  IMG=$("${P[@]}" images -q | head -1)
  UL=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
  measure "podman $(podman --version | awk '{print $3}') run -d --runtime runc --network none" "${P[@]}" run -d "${UL[@]}" --network none "$IMG" "${CMD[@]}"
  measure "podman run -d --runtime runc (default network)" "${P[@]}" run -d "${UL[@]}" "$IMG" "${CMD[@]}"
fi

if command -v dockerd >/dev/null; then
  SOCK="$WORK/docker.sock"
  dockerd --data-root "$WORK/docker" --exec-root "$WORK/docker-exec" --pidfile "$WORK/docker.pid" \
    -H "unix://$SOCK" --bridge none --iptables=false >"$WORK/dockerd.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do docker -H "unix://$SOCK" info >/dev/null 2>&1 && break; sleep 0.1; done
  docker -H "unix://$SOCK" load -q -i "$WORK/image.tar" >/dev/null
  measure "docker $(docker --version | awk '{print $3}' | tr -d ,) run -d --network none" docker -H "unix://$SOCK" run -d --network none bench:1 "${CMD[@]}"
fi
