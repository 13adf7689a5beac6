#!/usr/bin/env bash
# Registry upload throughput, A/B in one run: two berth binaries (e.g. before and after a
# change to the upload path) each receive the same random blob over loopback with curl,
#   - monolithic: one POST ?digest= streaming the whole blob;
#   - chunked: POST, then PATCHes of CHUNK_MIB each, then PUT ?digest=;
# rounds alternate A and B so that machine noise hits both. Prints MiB/s per round and the
# median per binary and mode.
# usage: bench/upload_ab.sh BERTH_A BERTH_B [blob MiB (1024)] [rounds (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")
B=$(realpath "$2")
MIB=${3:-1024}
ROUNDS=${4:-3}
CHUNK_MIB=${CHUNK_MIB:-64}
WORK=$(mktemp -d /tmp/berth-uploadab.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

head -c $((MIB << 20)) /dev/urandom >"$WORK/blob"
DIGEST=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)
split -b $((CHUNK_MIB << 20)) -d -a 4 "$WORK/blob" "$WORK/chunk."

start() { # name binary → sets EP and PW
  "$2" up --listen 127.0.0.1:0 --data-dir "$WORK/$1" --log warn --local-node false \
    --registry-create-on-push true >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 400); do [ -f "$WORK/$1/endpoint.json" ] && break; sleep 0.05; done
  local env
  env=$("$2" env --data-dir "$WORK/$1")
  EP=$(sed -n 's/^export AWS_ENDPOINT_URL=//p' <<<"$env")
  PW=$(env $(sed 's/^export //' <<<"$env") AWS_CONFIG_FILE=/dev/null aws ecr get-login-password)
}

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$MIB / ($2 - $1):.0f}')"; }

monolithic() { # endpoint password
  local t0 code
  t0=$(now)
  code=$(curl -sS -o /dev/null -w '%{http_code}' -u "AWS:$2" -H 'Expect:' \
    -H 'Content-Type: application/octet-stream' -X POST -T "$WORK/blob" \
    "$1/v2/bench/blobs/uploads?digest=$DIGEST")
  [ "$code" = 201 ] || { echo "monolithic push: HTTP $code" >&2; exit 1; }
  rate "$t0" "$(now)"
}

chunked() { # endpoint password
  local t0 loc start=0 size code
  t0=$(now)
  loc=$(curl -sS -o /dev/null -D - -u "AWS:$2" -X POST "$1/v2/bench/blobs/uploads/" |
    sed -n 's/^[Ll]ocation: *//p' | tr -d '\r')
  for c in "$WORK"/chunk.*; do
    size=$(stat -c %s "$c")
    code=$(curl -sS -o /dev/null -w '%{http_code}' -u "AWS:$2" -H 'Expect:' \
      -H 'Content-Type: application/octet-stream' \
      -H "Content-Range: $start-$((start + size - 1))" -X PATCH -T "$c" "$1$loc")
    [ "$code" = 202 ] || { echo "PATCH: HTTP $code" >&2; exit 1; }
    start=$((start + size))
  done
  code=$(curl -sS -o /dev/null -w '%{http_code}' -u "AWS:$2" -X PUT "$1$loc?digest=$DIGEST")
  [ "$code" = 201 ] || { echo "PUT: HTTP $code" >&2; exit 1; }
  rate "$t0" "$(now)"
}

start a "$A"; EP_A=$EP PW_A=$PW
start b "$B"; EP_B=$EP PW_B=$PW
declare -A R
for round in $(seq "$ROUNDS"); do
  for side in a b; do
    if [ $side = a ]; then ep=$EP_A pw=$PW_A; else ep=$EP_B pw=$PW_B; fi
    m=$(monolithic "$ep" "$pw")
    c=$(chunked "$ep" "$pw")
    R[$side.mono]+="$m "
    R[$side.chunk]+="$c "
    echo "round $round $side: monolithic $m MiB/s, chunked ($CHUNK_MIB MiB PATCHes) $c MiB/s"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "A $A: monolithic $(median "${R[a.mono]}") MiB/s, chunked $(median "${R[a.chunk]}") MiB/s (median of $ROUNDS, $MIB MiB)"
echo "B $B: monolithic $(median "${R[b.mono]}") MiB/s, chunked $(median "${R[b.chunk]}") MiB/s (median of $ROUNDS, $MIB MiB)"
