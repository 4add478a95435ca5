#!/usr/bin/env bash
# Headless Chromium for the report tests (tests/test_report_browser.py): Debian's `chromium`
# package, used offline (the tests pass flags that turn off every background fetch).
#
#   scripts/chromium-test.sh install   install chromium (and tmux, for tests/test_watch.py) if missing
#   scripts/chromium-test.sh status    print the chromium version; exit 1 when it is missing
#
# apt runs under /tmp/apt.lock: other service scripts and people may run apt at the same time.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v tmux >/dev/null 2>&1 || need+=(tmux)

case "${1:-install}" in
install)
    if ((${#need[@]})); then
        flock /tmp/apt.lock apt-get update -qq
        DEBIAN_FRONTEND=noninteractive flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
    chromium --version
    ;;
status)
    chromium --version
    ;;
*)
    echo "usage: $0 install|status" >&2
    exit 2
    ;;
esac
