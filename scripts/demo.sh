#!/bin/bash
# make demo: a quiet weekend in under a minute, with no MongoDB and no Docker.
#
# A local redis-server, the scripted replica set (tests/sim/mongosim.py) and a
# local Slack stand-in (tests/support/webhook.py --print) play the cluster.
# The "orders" consumer checkpoints on Friday evening and stops; the cluster
# keeps writing all weekend, at 7200x speed, while a guarding tokenwatch
# watches the stored token age: WARN, CRIT, LOST reach "Slack". On Monday the
# consumer comes back with --on-token-lost fallback: it replays from the
# oldest entry still in the oplog and records the gap. Everything this script
# starts, it stops.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TW=${TW_BINARY:-$ROOT/build/tokenwatch}
PY=/usr/bin/python3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tokenwatch-demo-XXXXXX")
PIDS=()

FRIDAY=1795197600  # 2026-11-20T18:00:00Z
RATE=7200          # two hours of cluster time per second
MONDAY=$((FRIDAY + 60 * 3600))

if [ -t 1 ]; then BOLD=$'\033[1m'; DIM=$'\033[2m'; OFF=$'\033[0m'; else BOLD=; DIM=; OFF=; fi

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$OFF"; }
note() { printf '%s   %s%s\n' "$DIM" "$*" "$OFF"; }

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_file() {
    for _ in $(seq 1 200); do
        [ -s "$1" ] && return 0
        sleep 0.05
    done
    echo "demo: $1 never appeared" >&2
    exit 1
}

json_field() {  # json_field FILE KEY
    "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

control() {  # control METHOD PATH [JSON]: the simulator's control API
    "$PY" - "$SIM_CONTROL" "$@" <<'EOF'
import json, sys, urllib.request
port, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=10).read().decode())
EOF
}

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# ---------------------------------------------------------------- the stage
say "Starting a local Redis, a scripted MongoDB replica set and a Slack stand-in"
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --save '' \
    --appendonly no --logfile "$WORK/redis.log" &
PIDS+=($!)
for _ in $(seq 1 100); do rcli ping >/dev/null 2>&1 && break; sleep 0.05; done

cat >"$WORK/scenario.json" <<EOF
{"start_time": $FRIDAY, "rate": 0, "retention": 172800,
 "initial_oplog_span": 172800, "background_every": 300}
EOF
"$PY" "$ROOT/tests/sim/mongosim.py" --port-file "$WORK/sim.json" \
    --scenario "$WORK/scenario.json" 2>"$WORK/sim.log" &
PIDS+=($!)
wait_for_file "$WORK/sim.json"
SIM_CONTROL=$(json_field "$WORK/sim.json" control_port)
MONGO_URI="mongodb://localhost:$(json_field "$WORK/sim.json" mongo_port)/?replicaSet=rs0"

"$PY" "$ROOT/tests/support/webhook.py" --port-file "$WORK/webhook.json" --print \
    > >(sed -u 's/^/   slack │ /') 2>"$WORK/webhook.log" &
PIDS+=($!)
wait_for_file "$WORK/webhook.json"
WEBHOOK="http://127.0.0.1:$(json_field "$WORK/webhook.json" port)/services/TDEMO/BDEMO/not-a-real-secret"
note "Redis on port $REDIS_PORT; MongoDB at $MONGO_URI; 48 h of oplog, kept 48 h"

COMMON=(--mongo-uri "$MONGO_URI" --redis-url "redis://127.0.0.1:$REDIS_PORT/0"
        --environment demo --metrics-addr off)
ORDERS_KEY='tokenwatch:{orders}:checkpoint'

# ---------------------------------------------------------------- Friday
say "Friday 18:00: the orders consumer follows shop.orders and checkpoints"
"$TW" run --name orders --db shop --collection orders --sink redis \
    --max-events 5 "${COMMON[@]}" 2>"$WORK/friday.log" &
FRIDAY_PID=$!
PIDS+=("$FRIDAY_PID")
for _ in $(seq 1 100); do [ -n "$(rcli hget "$ORDERS_KEY" token)" ] && break; sleep 0.05; done
control POST /events '{"count": 5}' >/dev/null
wait "$FRIDAY_PID"
"$TW" checkpoint show --name orders "${COMMON[@]}" | sed 's/^/   /'
note "then the consumer stops for the weekend; the rest of the cluster keeps writing"

# ---------------------------------------------------------------- the weekend
say "The weekend, at ${RATE}x: a guarding tokenwatch watches the stored token age"
"$TW" run --name guardian --db shop --collection audit --guard "$ORDERS_KEY" \
    --monitor-interval 200ms --slack-webhook "$WEBHOOK" --log-level error \
    "${COMMON[@]}" 2>"$WORK/guardian.log" &
GUARDIAN_PID=$!
PIDS+=("$GUARDIAN_PID")
sleep 1
control POST /clock "{\"rate\": $RATE}" >/dev/null
note "time left is at the usual write pace; the simulated cluster runs ${RATE}x faster"
while :; do
    now=$(control GET /state | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["newest"]["t"])')
    "$TW" status --name orders "${COMMON[@]}" --json >"$WORK/status.json" || true
    "$PY" - "$WORK/status.json" "$now" <<'EOF'
import datetime, json, sys
status = json.load(open(sys.argv[1]))
now = datetime.datetime.fromtimestamp(int(sys.argv[2]), datetime.timezone.utc)
key = status["keys"][0]
left = key.get("time_left_seconds")
if key["state"] == "LOST" or left is None:
    words, share = "none", "older than the oldest oplog entry"
else:
    hours, minutes = divmod(int(left) // 60, 60)
    words, share = f"{hours}h {minutes:02d}m", f"{key['share'] * 100:3.0f}% of the window"
print(f"   {now:%a %H:%M}  orders checkpoint {key['state']:<5}  time left {words:>8}  ({share})")
EOF
    [ "$now" -ge "$MONDAY" ] && break
    sleep 0.6
done
control POST /clock '{"rate": 0}' >/dev/null
sleep 0.5

# ---------------------------------------------------------------- Monday
say "Monday 06:00: the consumer comes back; its resume point is gone"
control POST /events '{"count": 3}' >/dev/null
note "tokenwatch run --name orders --on-token-lost fallback --max-events 3 ..."
"$TW" run --name orders --db shop --collection orders --sink redis \
    --on-token-lost fallback --slack-webhook "$WEBHOOK" --max-events 3 \
    "${COMMON[@]}" 2>"$WORK/monday.log"
grep -E "lost|fallback|checkpoint moved|stopping" "$WORK/monday.log" | cut -c 25- |
    fold -s -w 110 | sed 's/^/   /'

say "What was skipped is on record"
note "redis-cli LRANGE 'tokenwatch:{orders}:gaps' 0 -1"
rcli lrange 'tokenwatch:{orders}:gaps' 0 -1 | sed 's/^/   /'
note "tokenwatch checkpoint history --name orders"
"$TW" checkpoint history --name orders "${COMMON[@]}" | sed 's/^/   /'

sleep 1.5  # the guard sees the fresh checkpoint: "resolved"
kill -TERM "$GUARDIAN_PID" 2>/dev/null || true
wait "$GUARDIAN_PID" 2>/dev/null || true

say "tokenwatch status --name orders (exit 0 OK, 1 WARN, 2 CRIT/LOST, 3 UNKNOWN)"
set +e
"$TW" status --name orders "${COMMON[@]}" | sed 's/^/   /'
code=${PIPESTATUS[0]}
set -e
note "exit code $code"
say "Done: everything this demo started is stopped. Next: make test"
