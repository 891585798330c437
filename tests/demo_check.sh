#!/bin/sh
# Runs the demo and checks that its story happened: each alert reached the
# Slack stand-in, the fallback replayed, the gap was recorded, the guard
# resolved, the final status was OK, and nothing it started is left running.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
log=${1:-$root/build/demo.log}
mkdir -p "$(dirname "$log")"

if ! bash "$root/scripts/demo.sh" >"$log" 2>&1; then
    cat "$log"
    echo "demo-check: the demo failed" >&2
    exit 1
fi

failed=0
expect() {
    if grep -qF -- "$1" "$log"; then
        echo "demo-check: ok: $2"
    else
        echo "demo-check: MISSING: $2 ($1)" >&2
        failed=1
    fi
}

expect "is now WARN" "the WARN alert reached Slack"
expect "is now CRIT" "the CRIT alert reached Slack"
expect "guardian: tokenwatch:{orders}:checkpoint is now LOST" "the guard's LOST alert reached Slack"
expect "replayed from" "the fallback's alert says where it replayed from"
expect "of history skipped" "and how much history was skipped"
expect '"from" : "1795197600:' "the gap starts at Friday's checkpoint"
expect "is resolved OK (was LOST)" "the guard resolved once the consumer was back"
expect "exit code 0" "the final status was OK"
expect "time left" "the token's time left was shown counting down"

# Every server the demo starts names its temporary directory.
if pgrep -f "tokenwatch-demo-" >/dev/null; then
    echo "demo-check: processes of the demo are still running" >&2
    failed=1
fi
[ "$failed" -eq 0 ] || cat "$log"
exit "$failed"
