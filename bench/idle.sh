#!/usr/bin/env bash
# Memory of idle tasks on the local node: `berth up` (control plane, registry and agent in one
# process) runs N idle single-container busybox tasks (networkMode none); measured:
#   - the berth process's resident memory before and with the tasks running (the agent's
#     per-task bookkeeping: task state, watchers, timers);
#   - what each container costs beyond its own processes: its `berth shim` (the reaper;
#     proportional set size from smaps_rollup, so shared pages of the binary are shared).
# Peer in the same run: `conmon`, podman's per-container monitor, for 20 idle containers.
# Needs root. usage: bench/idle.sh [tasks]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
[ "$(id -u)" -eq 0 ] || { echo "bench/idle.sh needs root" >&2; exit 1; }
cargo build --release -q -p berth
WORK=$(mktemp -d /tmp/berth-idle.XXXXXX)
BRIDGE=bthidle0
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for p in $(pgrep -f "shim.*$WORK"); do kill -9 "$p" 2>/dev/null; done
  podman --root "$WORK/podman" --runroot "$WORK/podman-run" rm -af -t 0 >/dev/null 2>&1
  podman --root "$WORK/podman" --runroot "$WORK/podman-run" system reset -f >/dev/null 2>&1
  sleep 0.5
  grep "$WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  for d in /sys/fs/cgroup/*/berth/*; do [ -d "$d" ] && rmdir "$d"/* "$d" 2>/dev/null; done
  ip link del "$BRIDGE" 2>/dev/null
  nft delete table ip "berth-$BRIDGE" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }

target/release/berth up --listen 127.0.0.1:0 --data-dir "$WORK/berth" --log warn --local-node true \
  --bridge-name "$BRIDGE" --bridge-subnet 10.218.0.0/24 --registry-create-on-push true & BP=$!; PIDS+=($BP)
for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$(target/release/berth env --data-dir "$WORK/berth")"
HOST=${AWS_ENDPOINT_URL#http://}
mkdir -p "$WORK/rootfs/bin"
cp /bin/busybox "$WORK/rootfs/bin/"
for a in sh sleep; do ln -s busybox "$WORK/rootfs/bin/$a"; done
target/release/berth push "$WORK/rootfs" "$HOST/idle:1" --data-dir "$WORK/berth" >/dev/null
python3 - "$N" "$BP" <<'EOF'
import json, os, subprocess, sys, time, boto3
n, berth = int(sys.argv[1]), int(sys.argv[2])
ecs = boto3.client("ecs")
host = os.environ["AWS_ENDPOINT_URL"].removeprefix("http://")
ecs.register_task_definition(family="idle", networkMode="none", containerDefinitions=[{
    "name": "c", "image": host + "/idle:1", "memory": 8, "cpu": 1, "stopTimeout": 2,
    "command": ["/bin/sleep", "100000"]}])
def rss(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS"):
            return int(l.split()[1])
# Warm up one task so the image is pulled and every path of the agent has run once.
arn = ecs.run_task(cluster="default", taskDefinition="idle")["tasks"][0]["taskArn"]
while ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"][0]["lastStatus"] != "RUNNING":
    time.sleep(0.05)
ecs.stop_task(cluster="default", task=arn)
while ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"][0]["lastStatus"] != "STOPPED":
    time.sleep(0.05)
time.sleep(1)
before = rss(berth)
t0 = time.time()
arns = []
while len(arns) < n:
    r = ecs.run_task(cluster="default", taskDefinition="idle", count=min(10, n - len(arns)))
    assert not r["failures"], r["failures"]
    arns += [t["taskArn"] for t in r["tasks"]]
running = 0
while running < n:
    time.sleep(0.5)
    running = 0
    for i in range(0, n, 100):
        ts = ecs.describe_tasks(cluster="default", tasks=arns[i:i + 100])["tasks"]
        running += sum(t["lastStatus"] == "RUNNING" for t in ts)
    if time.time() - t0 > 600:
        sys.exit("only %d of %d RUNNING after 600 s" % (running, n))
took = time.time() - t0
time.sleep(3)
after = rss(berth)
shims = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        args = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
    except OSError:
        continue
    if b"shim" in args and any(b"berth-idle" in a for a in args):
        pss = rss_s = 0
        for l in open("/proc/%s/smaps_rollup" % pid):
            if l.startswith("Pss:"):
                pss = int(l.split()[1])
            if l.startswith("Rss:"):
                rss_s = int(l.split()[1])
        shims.append((pss, rss_s))
print("berth: %d idle tasks RUNNING in %.1f s (%.0f tasks/s started)" % (n, took, n / took))
print("berth process RSS: %.1f MiB before, %.1f MiB with %d tasks: %.1f KiB per task" % (
    before / 1024, after / 1024, n, (after - before) / n))
print("berth shim per container: PSS %.0f KiB (RSS %.0f KiB, shared pages counted in full), %d shims" % (
    sum(p for p, _ in shims) / len(shims), sum(r for _, r in shims) / len(shims), len(shims)))
print("per-task overhead (berth bookkeeping + shim PSS): %.0f KiB" % (
    (after - before) / n + sum(p for p, _ in shims) / len(shims)))
t0 = time.time()
for a in arns:
    ecs.stop_task(cluster="default", task=a)
left = n
while left:
    time.sleep(0.5)
    left = len(ecs.list_tasks(cluster="default", desiredStatus="STOPPED")["taskArns"]) and sum(
        1 for i in range(0, n, 100) for t in ecs.describe_tasks(cluster="default", tasks=arns[i:i + 100])["tasks"]
        if t["lastStatus"] != "STOPPED")
    if time.time() - t0 > 300:
        break
print("all %d stopped in %.1f s" % (n, time.time() - t0))
EOF

if command -v podman >/dev/null && command -v conmon >/dev/null; then
  P=(podman --root "$WORK/podman" --runroot "$WORK/podman-run" --runtime runc)
  target/release/berth pull "$HOST/idle:1" "$WORK/layout" --data-dir "$WORK/berth" >/dev/null
  skopeo copy -q "oci:$WORK/layout" "docker-archive:$WORK/image.tar:idle:1" >/dev/null
  "${P[@]}" load -q -i "$WORK/image.tar" >/dev/null
  IMG=$("${P[@]}" images -q | head -1)
  for i in $(seq 20); do
    "${P[@]}" run -d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$IMG" /bin/sleep 100000 >/dev/null
  done
  tot=0; cnt=0
  for p in $(pgrep -f "conmon.*$WORK"); do tot=$((tot + $(pss_kib "$p"))); cnt=$((cnt + 1)); done
  [ "$cnt" -gt 0 ] && echo "peer: podman's conmon per container: PSS $((tot / cnt)) KiB ($cnt containers)"
fi
