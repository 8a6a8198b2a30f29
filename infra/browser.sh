#!/usr/bin/env bash
# What the browser tests need: Debian's Chromium for Playwright (Playwright's own download cannot
# work here) and the npm packages pinned in package-lock.json (axe-core; the AsyncAPI parser the
# unit tests run on docs/asyncapi.yaml), from the npm registry.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

apt_install() { # package...
  if [[ "$(id -u)" != 0 ]]; then say browser "install Debian's $* package (sudo apt-get install $*)" >&2; return 1; fi
  say browser "installing Debian's $* package"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > "$LOG_DIR/apt-$1.log"
}

ensure_chromium() {
  [[ -x /usr/bin/chromium ]] || apt_install chromium
}

# npm ci wipes node_modules, so the stamp of the lock it installed is written after it succeeds.
ensure_npm_packages() {
  local stamp="$REPO/node_modules/.installed-lock" want
  want="$(sha1sum "$REPO/package-lock.json" | cut -c1-12)"
  [[ -f "$REPO/node_modules/axe-core/axe.min.js" && -f "$REPO/node_modules/@asyncapi/parser/package.json" &&
    "$(cat "$stamp" 2>/dev/null)" == "$want" ]] && return 0
  command -v npm > /dev/null || apt_install nodejs npm
  say browser "installing the npm packages of package-lock.json"
  (cd "$REPO" && npm ci --no-audit --no-fund --loglevel=error > "$LOG_DIR/npm-ci.log")
  echo "$want" > "$stamp"
}

ensure() {
  ensure_chromium
  ensure_npm_packages
}
"${1:-ensure}"
