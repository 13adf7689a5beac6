#!/usr/bin/env bash
# Services: the service controller's speed and cost, and self-healing on the real runtime.
#   sim part — one `berth server` (redb on disk) and NODES simulated nodes in session
#   (`berth agent --simulate`: real sessions, acks and RUNNING reports; containers modelled):
#     - a 100-task service: CreateService → steady state (one deployment, COMPLETED, all
#       RUNNING and healthy: the definition has a container health check the simulated nodes
#       pass), then a rolling update to a new definition (max 200 %, min 100 %) → COMPLETED;
#     - 1,000 services × 10 tasks: the server's CPU while they are steady, against the same
#       server before the services existed (the difference is the controller's share).
#   real part (root) — `berth up` with its local node, a service of 3 busybox tasks, image
#     cached: SIGKILL one task's process → a new task of the service RUNNING. Peers in the same
#     run: the same container under `podman run --restart always` and `docker run --restart
#     always` (a dockerd started here), SIGKILL → running again.
# usage: bench/services.sh [sim|real|all]   (NODES=100 RUNS=5 SERVICES=1000 KILLS=10)
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:-all}
NODES=${NODES:-100}
RUNS=${RUNS:-5}
SERVICES=${SERVICES:-1000}
KILLS=${KILLS:-10}
export RUST_BACKTRACE=0
python3 -c 'import boto3' 2>/dev/null || { [ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"; }
cargo build --release -q -p berth
B=$PWD/target/release/berth
WORK=$(mktemp -d /tmp/berth-services.XXXXXX)
BRIDGE=bthsvc0
SUBNET=10.215.0.0/24
PIDS=()
. bench/node-cleanup.sh
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  end_node
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# CPU share of one core used by pid $1 over $2 seconds, in percent.
cpu_pct() {
  local a b; a=$(cpu_ticks "$1"); sleep "$2"; b=$(cpu_ticks "$1")
  echo "scale=2; ($b - $a) * 100 / $HZ / $2" | bc
}
# taskdefs MODE IMAGE COMMAND [EXTRA]: web:1 and web:2 (EXTRA: more container members)
taskdefs() {
  for i in 1 2; do
    aws ecs register-task-definition --family web --network-mode "$1" --container-definitions \
      "[{\"name\": \"web\", \"image\": \"$2\", \"memory\": 16, \"essential\": true,
         \"command\": $3, \"environment\": [{\"name\": \"REV\", \"value\": \"$i\"}]${4:-}}]" >/dev/null
  done
}

if [ "$PART" = sim ] || [ "$PART" = all ]; then
  $B server --listen 127.0.0.1:0 --data-dir "$WORK/sim-server" --log warn & SERVER=$!; PIDS+=($SERVER)
  for _ in $(seq 200); do [ -f "$WORK/sim-server/endpoint.json" ] && break; sleep 0.05; done
  (
    eval "$($B env --data-dir "$WORK/sim-server")"
    export BENCH_CLUSTER=bench
    aws ecs create-cluster --cluster-name bench >/dev/null
    TOKEN=$($B token create --cluster bench --expires-in 1d 2>/dev/null)
    $B agent --server "$AWS_ENDPOINT_URL" --token "$TOKEN" --cluster bench --simulate "$NODES" \
      --sim-cpu 1048576 --sim-memory 1048576 --log warn --data-dir "$WORK/sim" > "$WORK/sim.log" 2>&1 &
    echo $! > "$WORK/sim.pid"
    until [ "$(aws ecs list-container-instances --cluster bench --query 'length(containerInstanceArns)')" = "$NODES" ]; do sleep 0.2; done
    # With a container health check, which the simulated nodes pass: a task counts as
    # healthy as soon as it is (without one, ECS — and berth — wait 40 s after RUNNING).
    taskdefs none busybox '["sleep", "3600"]' ', "healthCheck": {"command": ["CMD-SHELL", "true"]}'
    echo "== sim: $NODES simulated nodes, berth $($B version)"
    python3 bench/services.py steady 100 "$RUNS"
    sleep 3
    echo "server CPU with $NODES nodes and no services: $(cpu_pct "$SERVER" 20) % of one core (20 s)"
    python3 bench/services.py many "$SERVICES" 10
    sleep 5
    echo "server CPU with $SERVICES services × 10 tasks steady: $(cpu_pct "$SERVER" 30) % of one core (30 s)"
    kill "$(cat "$WORK/sim.pid")"
  ) || { echo "sim part failed"; tail -20 "$WORK/sim.log"; exit 1; }
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
fi

if [ "$PART" = real ] || [ "$PART" = all ]; then
  [ "$(id -u)" -eq 0 ] || { echo "the real part needs root (it starts containers)" >&2; exit 1; }
  $B up --listen 127.0.0.1:0 --data-dir "$WORK/berth" --log warn \
    --local-node true --bridge-name "$BRIDGE" --bridge-subnet "$SUBNET" \
    --image-pull-behavior prefer-cached --registry-create-on-push true & PIDS+=($!)
  for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
  eval "$($B env --data-dir "$WORK/berth")"
  export BENCH_CLUSTER=default
  HOST=${AWS_ENDPOINT_URL#http://}
  ROOTFS="$WORK/rootfs"
  mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp"
  cp /bin/busybox "$ROOTFS/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$ROOTFS/bin/$a"; done
  $B push "$ROOTFS" "$HOST/bench:1" --data-dir "$WORK/berth" >/dev/null
  MARK=31536017
  taskdefs none "$HOST/bench:1" "[\"sleep\", \"$MARK\"]"
  aws ecs create-service --cluster default --service-name heal --task-definition web:1 \
    --desired-count 3 >/dev/null
  echo "== real: berth $($B version), local node, image cached"
  python3 bench/services.py replace heal "$KILLS" "$MARK"
  $B pull "$HOST/bench:1" "$WORK/layout" --data-dir "$WORK/berth" >/dev/null
  skopeo copy -q "oci:$WORK/layout" "docker-archive:$WORK/image.tar:bench:1" >/dev/null
  if command -v podman >/dev/null; then
    P=(podman --root "$WORK/podman" --runroot "$WORK/podman-run" --runtime runc)
    "${P[@]}" load -q -i "$WORK/image.tar" >/dev/null
    IMG=$("${P[@]}" images -q | head -1)
    "${P[@]}" run -d --name heal --restart always --network none \
      --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$IMG" sleep "$MARK" >/dev/null
    python3 bench/services.py restart "podman $(podman --version | awk '{print $3}') --restart always: killed → running again" "$KILLS" -- \
      "${P[@]}" inspect -f '{{if .State.Running}}{{.State.Pid}}{{else}}0{{end}}' heal || echo "podman: no restart measured"
    "${P[@]}" rm -f -t 0 heal >/dev/null 2>&1 || true
  fi
  if command -v dockerd >/dev/null; then
    SOCK="$WORK/docker.sock"
    dockerd --data-root "$WORK/docker" --exec-root "$WORK/docker-exec" --pidfile "$WORK/docker.pid" \
      -H "unix://$SOCK" --bridge none --iptables=false >"$WORK/dockerd.log" 2>&1 & PIDS+=($!)
    for _ in $(seq 100); do docker -H "unix://$SOCK" info >/dev/null 2>&1 && break; sleep 0.1; done
    docker -H "unix://$SOCK" load -q -i "$WORK/image.tar" >/dev/null
    docker -H "unix://$SOCK" run -d --name heal --restart always --network none bench:1 sleep "$MARK" >/dev/null
    python3 bench/services.py restart "docker $(docker --version | awk '{print $3}' | tr -d ,) --restart always: killed → running again" "$KILLS" -- \
      docker -H "unix://$SOCK" inspect -f '{{if .State.Running}}{{.State.Pid}}{{else}}0{{end}}' heal
    docker -H "unix://$SOCK" rm -f heal >/dev/null 2>&1 || true
  fi
fi
