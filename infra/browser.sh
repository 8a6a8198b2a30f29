#!/usr/bin/env bash
# Debian's Chromium for the Playwright browser tests (Playwright's own download cannot work here).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure() {
  [[ -x /usr/bin/chromium ]] && return 0
  if [[ "$(id -u)" != 0 ]]; then say browser "install Debian's chromium package (sudo apt-get install chromium)" >&2; return 1; fi
  say browser "installing Debian's chromium package"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > "$LOG_DIR/apt-chromium.log"
}
"${1:-ensure}"
