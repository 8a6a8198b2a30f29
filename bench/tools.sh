#!/usr/bin/env bash
# Tools the benchmarks need besides the venv: vegeta, an open-loop HTTP load generator in Go,
# built from the Go module proxy into .cache/bin (bench/README.md, Packages).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VEGETA_VERSION=v12.12.0
BIN="$REPO/.cache/bin/vegeta"

if [[ -x "$BIN" ]] && "$BIN" -version 2> /dev/null | grep -q "${VEGETA_VERSION#v}"; then
  exit 0
fi
command -v go > /dev/null || { echo "bench: Go is needed to build vegeta $VEGETA_VERSION" >&2; exit 1; }
echo "bench: building vegeta $VEGETA_VERSION from the Go module proxy" >&2
mkdir -p "$(dirname "$BIN")"
GOBIN="$(dirname "$BIN")" CGO_ENABLED=0 go install \
  -ldflags "-s -w -X main.Version=$VEGETA_VERSION" "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
