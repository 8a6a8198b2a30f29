#!/usr/bin/env bash
# A private Docker Engine for `make test-deploy`: ensure | start | stop | status | env.
# Debian's docker.io runs with its own data root, exec root and socket under .data/docker, so it
# never touches a Docker already on the machine. No docker0 bridge: the compose stack uses its
# own network (whose forwarding rules dockerd programs in iptables; a host whose FORWARD policy
# is DROP would otherwise cut the containers off from each other), ports are published on
# 127.0.0.1, and image builds use the host's network (--network host). Compose v2 is built from the Go module
# proxy into a private DOCKER_CONFIG (Debian bookworm ships only compose v1, which
# testcontainers cannot drive).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
COMPOSE_VERSION="${COMPOSE_VERSION:-v2.40.3}"
DOCKER_DIR="$DATA_DIR/docker"
SOCK="$DOCKER_DIR/docker.sock"
PIDF="$DOCKER_DIR/dockerd.pid"
export DOCKER_HOST="unix://$SOCK"
export DOCKER_CONFIG="$DOCKER_DIR/config"
COMPOSE_BIN="$DOCKER_CONFIG/cli-plugins/docker-compose"
# Debian's client: its BuildKit client needs no buildx plugin (a newer docker on PATH might).
DOCKER=/usr/bin/docker

apt_install() {
  if [[ "$(id -u)" != 0 ]]; then
    say docker "missing $*: install Debian's packages (sudo apt-get install $*)" >&2
    return 1
  fi
  say docker "installing Debian's $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    > "$LOG_DIR/apt-docker.log"
}

ensure_compose() {
  [[ -x "$COMPOSE_BIN" ]] && "$COMPOSE_BIN" version 2> /dev/null | grep -q "${COMPOSE_VERSION#v}" && return 0
  command -v go > /dev/null || { say docker "Go is needed to build docker compose $COMPOSE_VERSION" >&2; return 1; }
  say docker "building docker compose $COMPOSE_VERSION from the Go module proxy"
  local mod="github.com/docker/compose/v2@$COMPOSE_VERSION" src
  # `go install pkg@version` refuses modules with exclude directives: build inside the module.
  GOFLAGS=-mod=mod go mod download "$mod" > "$LOG_DIR/compose-build.log" 2>&1
  src="$(GOFLAGS=-mod=mod go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  mkdir -p "$(dirname "$COMPOSE_BIN")"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
    -o "$COMPOSE_BIN" ./cmd) >> "$LOG_DIR/compose-build.log" 2>&1
}

ensure() {
  local missing=()
  command -v dockerd > /dev/null || missing+=(docker.io)
  [[ -x "$DOCKER" ]] || missing+=(docker.io)
  command -v mmdebstrap > /dev/null || missing+=(mmdebstrap)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  ensure_compose
}

running() { pid_alive "$PIDF" && [[ -S "$SOCK" ]] && "$DOCKER" version > /dev/null 2>&1; }

start() {
  ensure
  if running; then say docker "engine already running ($SOCK)"; return 0; fi
  mkdir -p "$DOCKER_DIR/root" "$DOCKER_DIR/exec"
  say docker "starting dockerd (data root $DOCKER_DIR/root, log $LOG_DIR/dockerd.log)"
  setsid dockerd --data-root "$DOCKER_DIR/root" --exec-root "$DOCKER_DIR/exec" \
    --pidfile "$PIDF" -H "$DOCKER_HOST" --bridge none \
    --containerd-namespace antrean --containerd-plugins-namespace antrean-plugins \
    > "$LOG_DIR/dockerd.log" 2>&1 < /dev/null &
  local i
  for ((i = 0; i < 600; i++)); do
    running && { say docker "engine ready ($DOCKER_HOST)"; return 0; }
    sleep 0.1
  done
  say docker "dockerd did not answer within 60 s: see $LOG_DIR/dockerd.log" >&2
  tail -20 "$LOG_DIR/dockerd.log" >&2
  return 1
}

stop() {
  if ! pid_alive "$PIDF"; then say docker "engine not running"; return 0; fi
  # Containers first, so their stop grace periods apply; then the engine and its containerd.
  local ids
  ids="$("$DOCKER" ps -q 2> /dev/null || true)"
  [[ -n "$ids" ]] && "$DOCKER" stop -t 30 $ids > /dev/null 2>&1 || true
  local pid i
  pid="$(cat "$PIDF")"
  kill "$pid" 2> /dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2> /dev/null || true
  rm -f "$PIDF"
  say docker "engine stopped"
}

status() {
  if running; then say docker "running ($DOCKER_HOST)"; else say docker "not running"; fi
}

# `eval "$(bash infra/docker/engine.sh vars)"`: point docker and compose at this engine.
vars() { printf 'export DOCKER_HOST=%q DOCKER_CONFIG=%q\n' "$DOCKER_HOST" "$DOCKER_CONFIG"; }

"${1:-status}"
