#!/usr/bin/env bash
# Builds every image `make test-deploy` runs, in the private engine (infra/docker/engine.sh):
# base images from Debian packages (mmdebstrap + docker import), since no public registry is
# reachable here, then the PostgreSQL and Kafka images on them and the app image from the
# repository's Dockerfile. Prints the variables docker-compose.yml takes to use them.
# Each image is tagged with a hash of its inputs and rebuilt only when they change.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
eval "$(bash "$REPO/infra/docker/engine.sh" vars)"
DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1
HERE="$REPO/infra/docker"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUILD_DIR="$DATA_DIR/docker/build"
mkdir -p "$BUILD_DIR"

have() { "$DOCKER" image inspect "$1" > /dev/null 2>&1; }

inputs_hash() { cat "$@" | sha1sum | cut -c1-12; }

# debian_base TAG PACKAGES: a minimal Debian root file system with PACKAGES, as an image.
debian_base() {
  local tag="$1" packages="$2"
  have "$tag" && return 0
  say images "mmdebstrap $SUITE + $packages -> $tag"
  local tar="$BUILD_DIR/base.tar"
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --customize-hook='chroot "$1" apt-get clean' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
    "$SUITE" "$tar" "$MIRROR" > "$LOG_DIR/mmdebstrap.log" 2>&1
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' "$tar" "$tag" > /dev/null
  rm -f "$tar"
}

build() { # tag context [docker build args...]
  local tag="$1" context="$2"
  shift 2
  have "$tag" && return 0
  say images "docker build -> $tag"
  "$DOCKER" build --network host -q -t "$tag" "$@" "$context" > "$LOG_DIR/docker-build.log" 2>&1 \
    || { tail -30 "$LOG_DIR/docker-build.log" >&2; return 1; }
}

main() {
  local python="antrean-local/python:3.11-$SUITE"
  local jre="antrean-local/jre:17-$SUITE"
  local pgbase="antrean-local/postgresql:15-$SUITE"
  debian_base "$python" python3,python3-venv,ca-certificates,tzdata
  debian_base "$jre" openjdk-17-jre-headless,ca-certificates
  debian_base "$pgbase" postgresql-15,tzdata,locales

  local pg="antrean-local/postgres:15-$(inputs_hash "$HERE"/postgres/*)"
  build "$pg" "$HERE/postgres" --build-arg "BASE_IMAGE=$pgbase"

  # The Kafka jars from Maven Central (infra/kafka/kafka.sh fetch), copied beside the Dockerfile.
  bash "$REPO/infra/kafka/kafka.sh" fetch
  local kctx="$BUILD_DIR/kafka"
  rm -rf "$kctx" && mkdir -p "$kctx"
  cp "$HERE"/kafka/* "$kctx/"
  cp -r "$CACHE_DIR/kafka-$KAFKA_VERSION/libs" "$kctx/libs"
  local kafka="antrean-local/kafka:$KAFKA_VERSION-$(inputs_hash "$HERE"/kafka/* "$REPO/infra/kafka/pom.xml")"
  build "$kafka" "$kctx" --build-arg "BASE_IMAGE=$jre"

  # The app image as ops build it, from the local Python base; the machine's CA bundle goes to
  # pip as a build secret (a TLS-inspecting proxy), never into a layer.
  local app_inputs
  app_inputs="$(cd "$REPO" && find Dockerfile .dockerignore pyproject.toml services shared migrations \
    -type f ! -path '*__pycache__*' -print0 | sort -z | xargs -0 sha1sum | sha1sum | cut -c1-12)"
  local app="antrean-cancel:test-$app_inputs"
  local ca=()
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && ca=(--secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt)
  build "$app" "$REPO" --build-arg "PYTHON_IMAGE=$python" "${ca[@]}"

  printf 'APP_IMAGE=%s\nPOSTGRES_IMAGE=%s\nKAFKA_IMAGE=%s\n' "$app" "$pg" "$kafka"
}

main
