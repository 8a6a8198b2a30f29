#!/usr/bin/env bash
# What the alert-rule tests need: promtool (`promtool check rules`, `promtool test rules` on
# ops/prometheus/alerts.yml), from Debian's prometheus package. Its server is not started:
# Debian images forbid service starts during apt-get (policy-rc.d), and nothing here runs it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure() {
  command -v promtool > /dev/null && return 0
  if [[ "$(id -u)" != 0 ]]; then
    say prometheus "promtool missing: install Debian's prometheus package (sudo apt-get install prometheus)" >&2
    return 1
  fi
  say prometheus "installing Debian's prometheus package (for promtool)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
    > "$LOG_DIR/apt-prometheus.log"
  command -v promtool > /dev/null
}
"${1:-ensure}"
