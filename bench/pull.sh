#!/usr/bin/env bash
# Image pull + unpack on the node: a 200 MiB image of 10 gzip layers (random files, 20 MiB
# per layer) in berth's registry, pulled by
#   - berth's node: RunTask of the image, pull time = pullStoppedAt − pullStartedAt as
#     DescribeTasks reports it (fetch with digest checks, safe unpack into the node's store);
#   - podman pull (same registry, same image, its default overlay storage: each layer unpacked once into its own directory).
# A fresh image (new random data) per round so that nothing is cached. Needs root.
# usage: bench/pull.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
[ "$(id -u)" -eq 0 ] || { echo "bench/pull.sh needs root" >&2; exit 1; }
cargo build --release -q -p berth
WORK=$(mktemp -d /tmp/berth-pull.XXXXXX)
BRIDGE=bthpull0
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for p in $(pgrep -f "shim.*$WORK"); do kill -9 "$p" 2>/dev/null; done
  podman --root "$WORK/podman" --runroot "$WORK/podman-run" system reset -f >/dev/null 2>&1
  grep "$WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  nft delete table ip "berth-$BRIDGE" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

target/release/berth up --listen 127.0.0.1:0 --data-dir "$WORK/berth" --log warn --local-node true \
  --bridge-name "$BRIDGE" --bridge-subnet 10.219.0.0/24 --registry-create-on-push true & PIDS+=($!)
for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$(target/release/berth env --data-dir "$WORK/berth")"
HOST=${AWS_ENDPOINT_URL#http://}
TOKEN=$(python3 -c 'import boto3,base64; print(base64.b64decode(boto3.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]).decode().split(":",1)[1])')

for round in $(seq "$ROUNDS"); do
  rm -rf "$WORK/layout"
  python3 - "$WORK/layout" "$round" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
out, seed = sys.argv[1], sys.argv[2]
os.makedirs(out + "/blobs/sha256")
def blob(b):
    d = hashlib.sha256(b).hexdigest()
    open(out + "/blobs/sha256/" + d, "wb").write(b)
    return "sha256:" + d
layers, diffs = [], []
bb = open("/bin/busybox", "rb").read()
for i in range(10):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        files = {"bin/busybox": bb, "bin/sh": bb} if i == 0 else {}
        for j in range(20):
            files["data/l%d/f%d" % (i, j)] = os.urandom(1 << 20)
        for name, data in files.items():
            info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o755
            t.addfile(info, io.BytesIO(data))
    r = raw.getvalue()
    gz = gzip.compress(r, compresslevel=1, mtime=0)
    diffs.append("sha256:" + hashlib.sha256(r).hexdigest())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(gz), "size": len(gz)})
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh", "-c", "sleep 1"]},
                  "rootfs": {"type": "layers", "diff_ids": diffs}, "created": "2026-01-0%sT00:00:00Z" % seed}).encode()
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)},
                  "layers": layers}).encode()
md = blob(man)
json.dump({"imageLayoutVersion": "1.0.0"}, open(out + "/oci-layout", "w"))
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": len(man)}]}, open(out + "/index.json", "w"))
EOF
  skopeo copy -q --dest-tls-verify=false --dest-creds "AWS:$TOKEN" "oci:$WORK/layout" "docker://$HOST/big:$round"
  python3 - "$HOST/big:$round" <<'EOF'
import sys, time, boto3
ecs = boto3.client("ecs")
img = sys.argv[1]
fam = "pull-" + img.rsplit(":", 1)[1]
ecs.register_task_definition(family=fam, networkMode="none",
    containerDefinitions=[{"name": "c", "image": img, "memory": 32}])
arn = ecs.run_task(cluster="default", taskDefinition=fam)["tasks"][0]["taskArn"]
while True:
    t = ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"][0]
    if t.get("pullStoppedAt") and t["lastStatus"] in ("RUNNING", "STOPPED"):
        break
    time.sleep(0.05)
d = (t["pullStoppedAt"] - t["pullStartedAt"]).total_seconds()
print("berth node pull+unpack %s (200 MiB, 10 layers): %.2f s" % (img, d))
EOF
  P=(podman --root "$WORK/podman" --runroot "$WORK/podman-run")
  "${P[@]}" system reset -f >/dev/null 2>&1 || true
  s=$(date +%s.%N)
  "${P[@]}" pull -q --tls-verify=false --creds "AWS:$TOKEN" "$HOST/big:$round" >/dev/null
  e=$(date +%s.%N)
  python3 -c "print('podman pull %s (overlay): %.2f s' % ('$HOST/big:$round', $e - $s))"
done
