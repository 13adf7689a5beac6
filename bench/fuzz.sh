#!/usr/bin/env bash
# Fuzz berth's parsers of untrusted bytes with afl++ (cargo-afl), grow the committed corpora,
# and print what each run did.
#
#   bench/fuzz.sh [minutes] [target…]      default: 5 minutes each, every target
#   JOBS=2 bench/fuzz.sh 30                 two targets at a time (one afl-fuzz per core)
#   PROFILE=release bench/fuzz.sh 60        faster execs, a longer build
#   bench/fuzz.sh 0 sigv4                   only fold the last run's queue into the corpus
#
# Targets are the functions in fuzz/src/lib.rs (`berth_fuzz::TARGETS`); their corpora are
# fuzz/corpus/<target>/. After a run the new queue entries (under 8 KiB) are minimised with afl-cmin -e
# together with the corpus, and what cmin keeps is copied back (the seed-* files always stay).
# Crashes are listed and left in target/fuzz/<target>/default/crashes/: reproduce one with
# `target/afl/debug/berth-fuzz-afl <target> < file`, fix it, and commit the input under
# fuzz/crashes/<target>/ so `cargo test -p berth-fuzz` replays it from then on.
#
# The layer target unpacks hostile tar files as root: it runs in its own mount namespace with
# `/` read-only, its temp dirs on a private tmpfs, so a path-escape bug cannot write to the
# host's disk (the target itself checks nothing appears beside the layer's root).
#
# Needs: cargo-afl (`cargo install cargo-afl`; it builds its own afl++ with `cargo afl config
# --build`), util-linux (unshare, mount). Nothing here is needed by `cargo build`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MINUTES=${1:-5}
shift || true
JOBS=${JOBS:-1}
PROFILE=${PROFILE:-debug}
OUT=${FUZZ_OUT:-$ROOT/target/fuzz}
export CARGO_TARGET_DIR=${AFL_TARGET_DIR:-$ROOT/target/afl}

log() { printf '\n== %s\n' "$*" >&2; }

if ! cargo afl --version >/dev/null 2>&1; then
  log "installing cargo-afl"
  cargo install cargo-afl
fi
cargo afl config --build >/dev/null 2>&1 || true # no-op once afl++ is built

log "building the afl driver ($PROFILE)"
build=(cargo afl build --features afl -p berth-fuzz --bin berth-fuzz-afl)
[ "$PROFILE" = release ] && build+=(--release)
nice -n 10 "${build[@]}"
BIN=$CARGO_TARGET_DIR/$PROFILE/berth-fuzz-afl

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(ls fuzz/corpus)
fi

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1
# The afl++ that cargo-afl built (the same version as the driver's runtime) goes first in
# PATH: afl-cmin calls afl-showmap by name, and Debian's older one lacks its options.
AFL_FUZZ=$(find "${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs" -path '*/afl/bin/afl-fuzz' 2>/dev/null | head -1)
if [ -n "$AFL_FUZZ" ]; then
  PATH=$(dirname "$AFL_FUZZ"):$PATH
  export PATH
fi
AFL_FUZZ=${AFL_FUZZ:-afl-fuzz}

# One target: fuzz for $MINUTES, then fold the queue back into the corpus.
run_one() {
  local t=$1 out=$OUT/$1
  if [ "$MINUTES" = 0 ]; then
    : # fold the queue of an earlier run back only
  else
    rm -rf "$out"
    mkdir -p "$out"
  fi
  local cmd=("$AFL_FUZZ" -V $((MINUTES * 60)) -t 2000 -i "$ROOT/fuzz/corpus/$t" -o "$out"
    -- "$BIN" "$t")
  if [ "$MINUTES" = 0 ]; then
    :
  elif [ "$t" = layer ] && [ "$(id -u)" -eq 0 ]; then
    local sandbox=$out/sandbox
    mkdir -p "$sandbox"
    unshare --mount --propagation private -- sh -c '
      set -e
      out=$1 sandbox=$2; shift 2
      mount --bind "$out" "$out"
      mount -t tmpfs -o size=512m tmpfs "$sandbox"
      mount -o remount,bind,ro /
      TMPDIR=$sandbox exec nice -n 10 "$@"' sh "$out" "$sandbox" "${cmd[@]}" \
      >"$out/afl.log" 2>&1 || true
  else
    nice -n 10 "${cmd[@]}" >"$out/afl.log" 2>&1 || true
  fi
  # Minimise queue + corpus together; copy back what cmin keeps that the corpus lacks.
  local queue=$out/default/queue
  if [ -d "$queue" ]; then
    local all=$out/cmin-in min=$out/cmin-out
    rm -rf "$all" "$min"
    mkdir -p "$all"
    cp "$ROOT/fuzz/corpus/$t"/* "$all"/ 2>/dev/null || true
    find "$queue" -maxdepth 1 -type f -name 'id:*' -size -8k \
      -exec sh -c 'for f; do cp "$f" "$0/q-$(sha1sum "$f" | cut -c1-16)"; done' "$all" {} +
    if TMPDIR=$out timeout 600 cargo afl cmin -e -i "$all" -o "$min" -t 2000 -- "$BIN" "$t" >"$out/cmin.log" 2>&1; then
      # Drop earlier fuzz finds cmin no longer needs; keep the hand-made seeds.
      for f in "$ROOT/fuzz/corpus/$t"/*; do
        case $(basename "$f") in seed-*) ;; *) [ -e "$min/$(basename "$f")" ] || rm -f "$f" ;; esac
      done
      for f in "$min"/*; do
        [ -e "$ROOT/fuzz/corpus/$t/$(basename "$f")" ] || cp "$f" "$ROOT/fuzz/corpus/$t/"
      done
    fi
  fi
}

summary() {
  local t=$1 s=$OUT/$1/default/fuzzer_stats
  if [ ! -f "$s" ]; then
    printf '%-10s  no stats (see %s)\n' "$t" "$OUT/$t/afl.log"
    return
  fi
  local get
  get() { awk -F' *: *' -v k="$1" '$1 == k {print $2}' "$s"; }
  printf '%-10s %8s s %12s execs %8s exec/s %6s corpus %4s crashes %4s hangs %5s files kept\n' \
    "$t" "$(get run_time)" "$(get execs_done)" "$(get execs_per_sec)" "$(get corpus_count)" \
    "$(get saved_crashes)" "$(get saved_hangs)" "$(ls "$ROOT/fuzz/corpus/$t" | wc -l)"
}

log "fuzzing ${TARGETS[*]} for $MINUTES min each, $JOBS at a time"
running=0
for t in "${TARGETS[@]}"; do
  if [ ! -d "fuzz/corpus/$t" ]; then
    echo "unknown target $t (no fuzz/corpus/$t)" >&2
    exit 2
  fi
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

log "summary ($MINUTES min per target, $PROFILE build)"
for t in "${TARGETS[@]}"; do summary "$t"; done
crashes=$(find "$OUT" -path '*/crashes/id:*' -type f 2>/dev/null | sort)
if [ -n "$crashes" ]; then
  log "crashes (reproduce: $BIN <target> < file)"
  echo "$crashes"
fi
du -sh --apparent-size fuzz/corpus >&2
