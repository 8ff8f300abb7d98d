#!/usr/bin/env bash
# Shipyard's local stack on a Debian machine (what CI does, and what a new user runs).
#
#   bash deployments/local/stack.sh install   # apt packages, uv, Python deps
#   bash deployments/local/stack.sh up        # dockerd, base image, wheelhouse
#   bash deployments/local/stack.sh test      # install + up + the whole test suite
#   bash deployments/local/stack.sh release   # install + up + a real local release of the sample service
#
# Everything listens on 127.0.0.1. Processes it starts are recorded in
# $SHIPYARD_RUN/*.pid so `down` stops only those.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
export SHIPYARD_RUN=${SHIPYARD_RUN:-/tmp/shipyard-run}
export BASE_IMAGE=${SHIPYARD_BASE_IMAGE:-shipyard/base:bookworm}
mkdir -p "$SHIPYARD_RUN"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install() {
  local pkgs="docker.io docker-registry haproxy apache2-utils debootstrap postgresql-15 wrk git curl ca-certificates"
  local missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "apt-get install$missing"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  # The Debian services must not run on their own: tests start their own copies.
  for svc in haproxy docker-registry; do as_root service "$svc" stop >/dev/null 2>&1 || true; done
  if ! command -v uv >/dev/null 2>&1; then
    log "installing uv"
    python3 -m pip install -q uv 2>/dev/null || python3 -m pip install -q --break-system-packages uv
  fi
  log "uv sync"
  # Bytecode at install: with PYTHONDONTWRITEBYTECODE set (as on these machines) every
  # process would otherwise compile Prefect anew (import 4.2 s → 1.9 s, measured).
  uv sync -q --frozen --compile-bytecode 2>/dev/null || uv sync -q --compile-bytecode
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  log "starting dockerd"
  as_root sh -c "nohup dockerd >'$SHIPYARD_RUN/dockerd.log' 2>&1 & echo \$! >'$SHIPYARD_RUN/dockerd.pid'"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return; sleep 0.5; done
  tail -20 "$SHIPYARD_RUN/dockerd.log" >&2
  echo "dockerd did not start" >&2; exit 1
}

base_image() {
  # Real users build FROM python:3.11-slim; no image can be pulled here, so a
  # minimal Debian with python3 is made with debootstrap (about 45 s, once).
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  log "building base image $BASE_IMAGE with debootstrap"
  local dir="$SHIPYARD_RUN/rootfs"
  as_root rm -rf "$dir"
  as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" >"$SHIPYARD_RUN/debootstrap.log" 2>&1
  as_root tar -C "$dir" -c . | docker import - "$BASE_IMAGE" >/dev/null
  as_root rm -rf "$dir"
}

wheelhouse() {
  log "wheelhouse for examples/service"
  uv run python -c "from pathlib import Path; from tasks.build import ensure_wheelhouse; ensure_wheelhouse(Path('examples/service'), 'requirements.txt')"
}

up() { start_dockerd; base_image; wheelhouse; }

down() {
  for f in "$SHIPYARD_RUN"/*.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"
  done
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  test)
    install; up
    log "ruff + mypy"
    uv run ruff check . && uv run ruff format --check . && uv run mypy
    log "pytest"
    uv run pytest -q --durations=15 tests
    ;;
  release)
    install; up
    uv run python -m deployments.local.demo "${@:2}"
    ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
