#!/bin/sh
# The guard's rounds over many positions (issue 11): a Debezium Server
# offset hash of N fields and N oplogtoredis keys found by a pattern, read
# by `tokenwatch status` (one whole round: connect, SCAN, read, assess)
# against a local redis-server and the scripted MongoDB. Prints the time of
# each round; the default --monitor-interval is 30 s.
#   sh scripts/bench-guard.sh [N]      (default 1000; needs build/tokenwatch)
set -eu
N=${1:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/build/tokenwatch
DIR=$(mktemp -d /tmp/tokenwatch-bench-XXXXXX)
REDIS_PID=
SIM_PID=
cleanup() {
    if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; fi
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no \
    --logfile "$DIR/redis.log" &
REDIS_PID=$!
echo '{"rate": 0, "initial_oplog_span": 172800, "background_every": 600}' >"$DIR/scenario.json"
/usr/bin/python3 "$ROOT/tests/sim/mongosim.py" --port-file "$DIR/sim.port" \
    --scenario "$DIR/scenario.json" 2>"$DIR/sim.log" &
SIM_PID=$!
i=0
while [ ! -s "$DIR/sim.port" ] || ! redis-cli -p "$PORT" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "bench: servers did not start"; exit 1; }
    sleep 0.05
done
URI=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uri"])' "$DIR/sim.port")

# Positions an hour before the simulator's start (1700000000): all OK.
T=$((1700000000 - 3600))
/usr/bin/python3 - "$N" "$T" >"$DIR/load.txt" <<'PY'
import sys
n, t = int(sys.argv[1]), int(sys.argv[2])
token = "82%08X%08X2B022C0100296E5A1004" % (t, 1)
for k in range(n):
    field = '["redis",{"server_id":"c%05d"}]' % k
    value = '{"sec":%d,"ord":1,"resume_token":"%s"}' % (t, token)
    print("HSET metadata:debezium:offsets '%s' '%s'" % (field, value))
    print("SET oplogtoredis::lastProcessedEntry.%d %d" % (k, (t << 32) | 1))
PY
redis-cli -p "$PORT" <"$DIR/load.txt" >/dev/null

round() {
    start=$(date +%s%N)
    code=0
    "$BIN" status --mongo-uri "$URI" --redis-url "redis://127.0.0.1:$PORT/0" "$@" \
        >"$DIR/status.out" 2>"$DIR/status.err" || code=$?
    end=$(date +%s%N)
    rows=$(grep -c -e " OK " -e " WARN " -e " CRIT " -e " LOST " -e " UNKNOWN " "$DIR/status.out" || true)
    echo "bench: $*: $rows positions, exit $code, $(((end - start) / 1000000)) ms"
}
round --guard metadata:debezium:offsets
round --guard 'oplogtoredis::lastProcessedEntry.*'
round --guard metadata:debezium:offsets --guard 'oplogtoredis::lastProcessedEntry.*'
