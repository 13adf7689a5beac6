#!/usr/bin/env bash
# berth's whole test suite, as the README tells users to run it:
#   1. installs what the tests need if it is missing (Python venv with awscli, boto3, pytest);
#   2. builds berth;
#   3. runs every Rust test (unit, store contract, crash tests);
#   4. runs the end-to-end tests: the real `berth` binary driven by the real aws CLI and boto3.
# Usage: scripts/test.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n== %s\n' "$*"; }

# --- tools -----------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  log "installing python3-venv"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
fi
# Debian packages the end-to-end tests use: skopeo, podman and docker.io (registry clients;
# the tests start their own dockerd), busybox-static (the base of test images),
# docker-registry and openssl (a TLS registry to pull from), nftables (`nft`: the tests look at
# the node's rules, which berth programs over netlink).
missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import boto3, awscli, pytest' >/dev/null 2>&1; then
  log "installing awscli, boto3, pytest into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check awscli boto3 pytest
fi
export PATH="$VENV/bin:$PATH"

# --- build and Rust tests ----------------------------------------------------------------
log "cargo build"
cargo build --workspace --all-targets
log "cargo test"
cargo test --workspace

# --- end-to-end ----------------------------------------------------------------------------
log "end-to-end tests (aws CLI $(aws --version 2>&1 | cut -d' ' -f1), boto3)"
export BERTH_BIN="$ROOT/target/debug/berth"
python -m pytest -q tests/e2e "$@"
