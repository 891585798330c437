#!/bin/sh
# Runs each libFuzzer target for a while from its seed corpus.
# Usage: scripts/fuzz.sh BUILD_DIR SECONDS TARGET...
# The seeds in tests/fuzz/corpus/<target>/ are read, never written: what a
# run finds goes to BUILD_DIR/corpus/<target>/, a crashing input to
# BUILD_DIR/crashes/<target>-*. Any crash, leak or sanitizer report fails
# the run; a summary line per target gives the executions.
set -u

build=$1
seconds=$2
shift 2
failed=""
summary=""
for bin in "$@"; do
    name=$(basename "$bin")
    seeds=tests/fuzz/corpus/$name
    work=$build/corpus/$name
    log=$build/$name.log
    mkdir -p "$work" "$build/crashes"
    if [ ! -d "$seeds" ]; then
        echo "fuzz: $name has no seed corpus ($seeds)" >&2
        failed="$failed $name"
        continue
    fi
    echo "fuzz: $name for ${seconds}s"
    if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=4096 -print_final_stats=1 \
        -artifact_prefix="$build/crashes/$name-" "$work" "$seeds" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed="$failed $name"
        tail -n 60 "$log" >&2
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    line=$(printf '%-18s %-6s %10s execs %8s/s  %s' "$name" "$status" \
        "${execs:-?}" "${rate:-?}" "${cov:-}")
    summary="$summary
$line"
done
echo "fuzz: summary (${seconds}s each):$summary"
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed (inputs in $build/crashes/)" >&2
    exit 1
fi
