#!/usr/bin/env bash
# Scale: one `berth server` (durable redb store on disk), NODES simulated nodes in session
# (`berth agent --simulate`: real agents — registration, ACS and telemetry websockets, task
# runners, state reports — on a fake driver, containers modelled), TASKS tasks placed with
# RunTask (count=10, CONC in flight, every task committed to disk before it is acknowledged).
# Measures:
#   - registration of the nodes, and the server's CPU while they only exchange heartbeats;
#   - placement throughput (tasks placed and committed per second) and the time to 1M;
#   - the time until the nodes have reported every task RUNNING;
#   - the server's resident memory with every node and task, and the simulator's;
#   - node loss: a node that goes silent (SIGSTOP) → agentConnected false → its tasks
#     STOPPED, with the default timings (12 s timeout, 60 s grace).
# Peers: published numbers (Nomad C1M, kube-scheduler CI) — see BENCHMARKS.md.
# usage: bench/scale.sh [nodes] [tasks] [concurrency] [strategy]
#   SKIP_LOSS=1: no node-loss run; SKIP_RUNNING=1: stop after placement;
#   SIM_START_DELAY_MS=N: modelled containers take N ms to start, so the nodes report RUNNING
#   that late (placement alone);
#   BIN=path/to/berth: run that binary (an earlier commit's, say) as server and simulator
#   instead of building this one (berth-loadgen is still built here).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-10000}
TASKS=${2:-1000000}
CONC=${3:-64}
STRATEGY=${4:-random}
export RUST_BACKTRACE=0
cargo build --release -q -p berth-loadgen
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p berth
  BIN=target/release/berth
fi
B=$BIN
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
hwm_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

$B server --listen 127.0.0.1:0 --data-dir "$WORK/berth" --log warn & SERVER=$!; PIDS+=($SERVER)
for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$($B env --data-dir "$WORK/berth")"
loadgen() { target/release/berth-loadgen "$@"; }
call() { # op json → response (signed like an SDK, through the CLI's own client)
  python3 - "$@" <<'EOF'
import json, sys, boto3
ecs = boto3.client("ecs")
print(json.dumps(getattr(ecs, sys.argv[1])(**json.loads(sys.argv[2])), default=str))
EOF
}
python3 -c 'import boto3' 2>/dev/null || { [ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"; }
call create_cluster '{"clusterName": "scale"}' >/dev/null
TOKEN=$($B token create --cluster scale --expires-in 1d 2>/dev/null)
echo "server pid $SERVER, RSS $(rss_mib $SERVER) MiB before any node"

T0=$(date +%s.%N)
$B agent --server "$AWS_ENDPOINT_URL" --token "$TOKEN" --cluster scale --simulate "$NODES" \
  --sim-start-delay-ms "${SIM_START_DELAY_MS:-0}" \
  --log warn --data-dir "$WORK/sim" > "$WORK/sim.log" 2>&1 & SIM=$!; PIDS+=($SIM)
count_connected() {
  call describe_clusters '{"clusters": ["scale"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["clusters"][0]["registeredContainerInstancesCount"])'
}
while [ "$(count_connected)" -lt "$NODES" ]; do sleep 0.5; kill -0 $SIM || { cat "$WORK/sim.log"; exit 1; }; done
T1=$(date +%s.%N)
echo "$NODES simulated nodes registered in $(echo "$T1 - $T0" | bc) s"
sleep 8 # sessions open
echo "server RSS with $NODES nodes in session: $(rss_mib $SERVER) MiB; simulator RSS $(rss_mib $SIM) MiB"

C0=$(cpu_ticks $SERVER); S0=$(cpu_ticks $SIM); sleep 30; C1=$(cpu_ticks $SERVER); S1=$(cpu_ticks $SIM)
echo "heartbeats: $NODES sessions, 5 s interval: server CPU $(echo "scale=1; ($C1 - $C0) * 100 / $HZ / 30" | bc)% of one core over 30 s, simulator $(echo "scale=1; ($S1 - $S0) * 100 / $HZ / 30" | bc)%"

T0=$(date +%s.%N)
loadgen --tasks "$TASKS" --instances 0 --concurrency "$CONC" --cluster scale --strategy "$STRATEGY" --stop false --progress 10
T1=$(date +%s.%N)
echo "$TASKS tasks placed and committed in $(echo "$T1 - $T0" | bc) s"
echo "server RSS $(rss_mib $SERVER) MiB (peak $(hwm_mib $SERVER) MiB); simulator RSS $(rss_mib $SIM) MiB"
running() {
  call describe_clusters '{"clusters": ["scale"]}' | python3 -c 'import json,sys; c=json.load(sys.stdin)["clusters"][0]; print(c["runningTasksCount"])'
}
[ "${SKIP_RUNNING:-}" = 1 ] && exit 0
while [ "$(running)" -lt "$TASKS" ]; do sleep 1; done
T2=$(date +%s.%N)
echo "every task reported RUNNING $(echo "$T2 - $T0" | bc) s after the first RunTask"
echo "server RSS $(rss_mib $SERVER) MiB (peak $(hwm_mib $SERVER) MiB), store $(du -sh "$WORK/berth/state.redb" | cut -f1); simulator RSS $(rss_mib $SIM) MiB (peak $(hwm_mib $SIM) MiB)"

# Node loss with the default timings.
[ "${SKIP_LOSS:-}" = 1 ] && exit 0
$B agent --server "$AWS_ENDPOINT_URL" --token "$TOKEN" --cluster scale --simulate 1 \
  --sim-zones lost-zone --sim-cpu 1000000 --sim-memory 1000000 --log warn --data-dir "$WORK/sim1" > "$WORK/sim1.log" 2>&1 & LOST=$!; PIDS+=($LOST)
sleep 3
call run_task '{"cluster": "scale", "taskDefinition": "loadgen", "count": 10, "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.availability-zone == lost-zone"}]}' > "$WORK/lost.json"
LOST_ARN=$(python3 -c 'import json; print(json.load(open("'"$WORK/lost.json"'"))["tasks"][0]["containerInstanceArn"])')
TASK_ARN=$(python3 -c 'import json; print(json.load(open("'"$WORK/lost.json"'"))["tasks"][0]["taskArn"])')
sleep 2
kill -STOP $LOST; T0=$(date +%s.%N)
until [ "$(call describe_container_instances '{"cluster": "scale", "containerInstances": ["'"$LOST_ARN"'"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["containerInstances"][0]["agentConnected"])')" = False ]; do sleep 0.2; done
T1=$(date +%s.%N)
until [ "$(call describe_tasks '{"cluster": "scale", "tasks": ["'"$TASK_ARN"'"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"][0]["lastStatus"])')" = STOPPED ]; do sleep 0.2; done
T2=$(date +%s.%N)
echo "node loss: agentConnected false after $(echo "$T1 - $T0" | bc) s, its tasks STOPPED after $(echo "$T2 - $T0" | bc) s (timeout 12 s + grace 60 s)"
