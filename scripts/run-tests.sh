#!/bin/sh
# Runs one test binary and fails on a failed test or on any sanitizer
# report: Criterion counts a test as passed even when LeakSanitizer flags
# the worker that ran it, and tokenwatch's own reports land in its stderr.
# Usage: run-tests.sh LOG COMMAND [ARGS...]
set -u

log="$1"
shift
status_file="$log.status"

{
    "$@" 2>&1
    echo $? >"$status_file"
} | tee "$log"

status=$(cat "$status_file")
rm -f "$status_file"
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
    echo "run-tests: sanitizer reports in $log" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    # CI shows only the end of its output: repeat what failed there.
    echo "run-tests: failures in $log:" >&2
    grep -E '\[FAIL\]|\[----\]|CRASH|Timed out|Aborted' "$log" | tail -n 40 >&2
fi
exit "$status"
