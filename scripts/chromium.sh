#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the dashboard's browser test (headless).
#
#   scripts/chromium.sh install   install the packages if missing; print chromedriver's path
#   scripts/chromium.sh status    say whether they are installed
set -euo pipefail

DRIVER=/usr/bin/chromedriver
BROWSER=/usr/bin/chromium

log() { echo "chromium.sh: $*" >&2; }

installed() { [ -x "$DRIVER" ] && [ -x "$BROWSER" ]; }

case "${1:-}" in
    install)
        if ! installed; then
            log "installing Debian's chromium and chromium-driver packages"
            if [ "$(id -u)" = 0 ]; then
                apt-get update -qq >&2
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
            else
                sudo apt-get update -qq >&2
                sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
            fi
        fi
        installed || { log "chromium or chromedriver is still missing"; exit 1; }
        echo "$DRIVER"
        ;;
    status)
        if installed; then echo "installed: $("$BROWSER" --version 2>/dev/null)"; else echo "not installed"; exit 1; fi
        ;;
    *)
        echo "usage: $0 install|status" >&2
        exit 2
        ;;
esac
