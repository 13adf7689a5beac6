#!/usr/bin/env bash
# Soak: TASKS tasks churned over MINUTES minutes on `berth up`'s local node (a fresh data dir):
# tasks that exit by themselves, tasks stopped with StopTask, tasks whose health check fails,
# tasks killed by the OOM killer — in networkMode none, bridge and awsvpc. Samples what berth
# holds (its open files, memory and threads; shims and forwarders; mounts, cgroups, network
# namespaces, veths, iptables/nft rules; the node's per-task files) before, during and after
# the churn, prints a table, and exits 1 if anything grew beyond its tolerance once the churn
# has quiesced. The driver is bench/soak.py (boto3).
#
# Needs root. usage: bench/soak.sh [minutes=60] [tasks=1000]
#   BIN=path/to/berth   measure that binary (default: a release build of this tree)
#   LIVE=12             tasks at once at most;  SEED=1  the churn's random choices
#   STRICT_GLOBAL=1     also fail on machine-wide counts (only on a machine of your own)
#   RETENTION=600       seconds STOPPED tasks are kept (berth's default is an hour: a shorter
#                       one lets the run see memory settle once tasks are forgotten, so
#                       what grows is a leak, not retained records)
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-60}
TASKS=${2:-1000}
[ "$(id -u)" -eq 0 ] || { echo "bench/soak.sh needs root (it starts containers)" >&2; exit 1; }
python3 -c 'import boto3' 2>/dev/null || { [ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p berth
  BIN=$PWD/target/release/berth
fi
WORK=$(mktemp -d /tmp/berth-soak.XXXXXX)
BRIDGE=bthsoak0
SUBNET=10.242.0.0/24
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
  --local-node true --bridge-name "$BRIDGE" --bridge-subnet "$SUBNET" --container-stop-timeout 2 --stopped-task-retention "${RETENTION:-600}" \
  --image-pull-behavior prefer-cached --registry-create-on-push true 2>"$WORK/berth.log" & PIDS+=($!)
BERTH_PID=$!
for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$("$BIN" env --data-dir "$WORK/berth")"
HOST=${AWS_ENDPOINT_URL#http://}

# The image: static busybox with its applets.
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp"
cp /bin/busybox "$ROOTFS/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$ROOTFS/bin/$a"; done
"$BIN" push "$ROOTFS" "$HOST/soak:1" --data-dir "$WORK/berth" >/dev/null

echo "soak: $TASKS tasks over $MINUTES min, berth pid $BERTH_PID ($("$BIN" version 2>/dev/null || echo "$BIN"))"
set +e
python3 bench/soak.py --minutes "$MINUTES" --tasks "$TASKS" --pid "$BERTH_PID" --work "$WORK/berth" \
  --bridge "$BRIDGE" --subnet "$SUBNET" --image "$HOST/soak:1"
rc=$?
if ! kill -0 "$BERTH_PID" 2>/dev/null; then
  echo "FAIL: berth exited during the soak; its log:" >&2; tail -50 "$WORK/berth.log" >&2; rc=1
fi
exit $rc
