#!/usr/bin/env bash
# API throughput and latency of signed ECS reads (DescribeClusters, DescribeTasks) on loopback,
# with wrk; the peer in the same run is nginx serving the same response bytes from a file (the
# ceiling of an HTTP server on this machine, doing no auth and no JSON work). Also measures
# `berth up` cold start to serving and idle resident memory.
# usage: [BIN=path/to/berth] bench/api.sh [duration_seconds]   (needs wrk and nginx: apt-get install wrk nginx-light)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-16}
for t in wrk nginx; do command -v $t >/dev/null || { echo "need $t (apt-get install wrk nginx-light)"; exit 1; }; done
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
# BIN=path/to/berth measures that binary (an earlier commit's, say) instead of building this one.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p berth
  BIN=target/release/berth
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# Cold start: exec → first /healthz 200, over 10 fresh data dirs.
$PY - "$BIN" "$WORK" <<'PYEOF'
import json, os, subprocess, sys, time, urllib.request, statistics
bin_, work = sys.argv[1], sys.argv[2]
times, rss = [], []
for i in range(10):
    d = os.path.join(work, "cold%d" % i)
    t0 = time.perf_counter()
    p = subprocess.Popen([bin_, "up", "--listen", "127.0.0.1:0", "--data-dir", d, "--log", "warn", "--local-node", "false"])
    try:
        ep = os.path.join(d, "endpoint.json")
        while True:
            try:
                url = json.load(open(ep))["endpoint"]
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                break
            except Exception:
                time.sleep(0.001)
        times.append((time.perf_counter() - t0) * 1000)
        time.sleep(1.0)
        rss.append(int(next(l for l in open("/proc/%d/status" % p.pid) if l.startswith("VmRSS")).split()[1]) / 1024)
    finally:
        p.terminate(); p.wait()
print("cold start to serving: median %.1f ms, max %.1f ms (10 runs, fresh data dir each)" % (statistics.median(times), max(times)))
print("idle resident memory: median %.1f MiB" % statistics.median(rss))
PYEOF

$BIN up --listen 127.0.0.1:0 --data-dir "$WORK/data" --log warn --local-node false & PIDS+=($!)
for _ in $(seq 200); do [ -f "$WORK/data/endpoint.json" ] && break; sleep 0.05; done
eval "$($BIN env --data-dir "$WORK/data")"
$PY bench/presign.py "$WORK" >/dev/null

# The peer: nginx with the same bodies as static files.
NGPORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/ng/www"
cp "$WORK"/describe_*.json "$WORK/ng/www/"
cat > "$WORK/ng/nginx.conf" <<NGEOF
worker_processes 2;
daemon off;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/ng;
  server {
    listen 127.0.0.1:$NGPORT;
    root $WORK/ng/www;
    location / { error_page 405 =200 \$uri; default_type application/x-amz-json-1.1; }
  }
}
NGEOF
nginx -c "$WORK/ng/nginx.conf" & PIDS+=($!)
sleep 0.5

run() { # name url script
  local out; out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$2" "$3")
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  printf '| %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99"
}
printf '\nwrk -t1 -c%s -d%ss --latency, loopback, same 2-core machine\n\n' "$CONNS" "$DUR"
echo "| target | requests/s | p50 | p99 |"
echo "|---|---|---|---|"
run "berth DescribeClusters (signed, STATISTICS)" "$WORK/describe_clusters.lua" "$AWS_ENDPOINT_URL/"
run "berth DescribeTasks (signed, 1 task)" "$WORK/describe_tasks.lua" "$AWS_ENDPOINT_URL/"
run "berth DescribeClusters (signed by a role session: token + policy check)" "$WORK/describe_clusters_session.lua" "$AWS_ENDPOINT_URL/"
sed -e 's/^wrk.method.*/wrk.method = "POST"/' "$WORK/describe_clusters.lua" | grep -v '^response' > "$WORK/ng_post.lua"
run "nginx static file of the same DescribeClusters answer" "$WORK/ng_post.lua" "http://127.0.0.1:$NGPORT/describe_clusters.json"
