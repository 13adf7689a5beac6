#!/usr/bin/env bash
# RunTask + StopTask throughput, every task committed to disk before it is acknowledged:
#   - 10,000 tasks placed on 10 fake registered instances (RunTask count=10), then stopped;
#   - the placement-failure path (a cluster with no instances).
# The peer in the same run: etcd (Debian's etcd-server) doing the same number of durable
# single-key puts with the same concurrency through its JSON gateway — the commit rate of a
# widely used consensus store on this disk.
# usage: bench/runtask.sh [tasks] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-10000}
CONC=${2:-64}
export RUST_BACKTRACE=0
cargo build --release -q -p berth -p berth-loadgen
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

target/release/berth up --listen 127.0.0.1:0 --data-dir "$WORK/berth" --log warn --local-node false & PIDS+=($!)
for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$(target/release/berth env --data-dir "$WORK/berth")"
echo "berth, $TASKS tasks, $CONC requests in flight:"
target/release/berth-loadgen --tasks "$TASKS" --instances 10 --concurrency "$CONC" --cluster placed
target/release/berth-loadgen --tasks "$TASKS" --instances 0 --concurrency "$CONC" --cluster empty

if command -v etcd >/dev/null; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  PPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  etcd --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$PORT" \
       --advertise-client-urls "http://127.0.0.1:$PORT" \
       --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
       --initial-cluster "default=http://127.0.0.1:$PPORT" >"$WORK/etcd.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "peer: etcd $(etcd --version | head -1 | awk '{print $3}'), same machine and disk:"
  target/release/berth-loadgen etcd-put --etcd "http://127.0.0.1:$PORT" --puts "$TASKS" --concurrency "$CONC"
else
  echo "(etcd not installed: apt-get install etcd-server for the peer run)"
fi
