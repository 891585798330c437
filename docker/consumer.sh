#!/bin/sh
# An example CDC consumer: reads the change events tokenwatch writes to its
# Redis stream (TOKENWATCH_SINK=redis) with a consumer group, handles each one
# (here: prints it) and acknowledges it. Needs only sh and redis-cli, so the
# redis image runs it (compose.yaml, k8s/deployment.yaml).
#
# Each stream entry has the fields event (the change event as relaxed
# extended JSON, one line), token, cluster_time, op and ns.
#
# Delivery is at least once: an entry read but not acknowledged (the
# consumer died while handling it) stays pending in the group, and is read
# again first (ID 0) when the consumer with the same name comes back.
#
# Settings (environment):
#   REDIS_HOST, REDIS_PORT   the Redis tokenwatch writes to (redis, 6379)
#   REDISCLI_AUTH            its password, if any (read by redis-cli itself)
#   STREAM                   the stream key (tokenwatch:{orders}:events)
#   GROUP                    the consumer group (orders-consumer)
#   CONSUMER                 this consumer's name in the group (the hostname)
#   COUNT, BLOCK_MS          entries per read (100), how long a read waits (5000)
set -eu

REDIS_HOST="${REDIS_HOST:-redis}"
REDIS_PORT="${REDIS_PORT:-6379}"
# Not ${STREAM:-tokenwatch:{orders}:events}: the } of {orders} would end it.
STREAM="${STREAM:-}"
[ -n "$STREAM" ] || STREAM='tokenwatch:{orders}:events'
GROUP="${GROUP:-orders-consumer}"
CONSUMER="${CONSUMER:-$(hostname)}"
COUNT="${COUNT:-100}"
BLOCK_MS="${BLOCK_MS:-5000}"

log() {
    echo "consumer: $*"
}

rcli() {
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --raw "$@" </dev/null
}

# docker stop / pod termination: leave between two reads (a blocked read
# returns within BLOCK_MS). Unacknowledged entries stay pending.
trap 'log "stopping"; exit 0' TERM INT

wait_for_redis() {
    until [ "$(rcli PING 2>/dev/null)" = PONG ]; do
        log "waiting for Redis at $REDIS_HOST:$REDIS_PORT"
        sleep 1
    done
}

# The group reads the stream from its start (ID 0): events tokenwatch wrote
# before the consumer first came up are not skipped. MKSTREAM creates the
# stream when tokenwatch has not written yet. BUSYGROUP: it already exists.
ensure_group() {
    out=$(rcli XGROUP CREATE "$STREAM" "$GROUP" 0 MKSTREAM 2>&1) || :
    case "$out" in
        OK) log "created group $GROUP on $STREAM" ;;
        *BUSYGROUP*) ;;
        *)
            log "XGROUP CREATE $STREAM $GROUP failed: $out"
            return 1
            ;;
    esac
}

# Handles one entry: the place for the real work (write to a warehouse,
# update a search index, ...). Acknowledge only after it succeeded.
handle() {
    id="$1" op="$2" ns="$3" cluster_time="$4" event="$5"
    if [ -z "$op$ns$event" ]; then
        # A pending entry the stream no longer holds (trimmed by
        # TOKENWATCH_STREAM_MAXLEN): nothing left to handle.
        log "$id: gone from the stream (trimmed), acknowledging"
    else
        log "$id op=$op ns=$ns cluster_time=$cluster_time event=$(printf '%.160s' "$event")"
    fi
    rcli XACK "$STREAM" "$GROUP" "$id" >/dev/null
}

# Reads one batch: ID ">" for new entries, "0" for this consumer's pending
# ones. Exit status 0 when it handled at least one entry, 1 when there was
# none, 2 on an error (after a pause).
#
# redis-cli --raw prints the reply flattened, one value a line: the stream
# key, then per entry its ID and field/value pairs (an empty line instead of
# the pairs when the entry was trimmed away). Values are single lines: the
# event is compact JSON. A field name never looks like an entry ID
# (digits-digits), so an ID where a name is due starts the next entry.
read_batch() {
    out=$(rcli XREADGROUP GROUP "$GROUP" "$CONSUMER" COUNT "$COUNT" BLOCK "$BLOCK_MS" \
        STREAMS "$STREAM" "$1" 2>&1) || {
        log "XREADGROUP failed: $out"
        sleep 1
        return 2
    }
    [ -n "$out" ] || return 1 # BLOCK_MS passed without new entries
    first=$(printf '%s\n' "$out" | head -n 1)
    if [ "$first" != "$STREAM" ]; then
        # An error reply (NOGROUP when Redis lost the group, ...).
        log "XREADGROUP: $first"
        sleep 1
        ensure_group || :
        return 2
    fi
    printf '%s\n' "$out" | {
        n=0 id="" field="" skip_key=1
        op="" ns="" cluster_time="" event=""
        while IFS= read -r line; do
            if [ "$skip_key" = 1 ]; then
                skip_key=0
                continue
            fi
            if [ -n "$field" ]; then
                case "$field" in
                    op) op="$line" ;;
                    ns) ns="$line" ;;
                    cluster_time) cluster_time="$line" ;;
                    event) event="$line" ;;
                    *) ;; # token, and fields added later
                esac
                field=""
                continue
            fi
            case "$line" in
                "") ;; # a trimmed entry: no field/value pairs
                *[!0-9-]* | -* | *-) field="$line" ;;
                *-*)
                    if [ -n "$id" ]; then
                        handle "$id" "$op" "$ns" "$cluster_time" "$event"
                    fi
                    id="$line" op="" ns="" cluster_time="" event=""
                    n=$((n + 1))
                    ;;
                *) field="$line" ;;
            esac
        done
        if [ -n "$id" ]; then
            handle "$id" "$op" "$ns" "$cluster_time" "$event"
        fi
        [ "$n" -gt 0 ]
    }
}

wait_for_redis
until ensure_group; do
    sleep 1
done
log "reading $STREAM as $CONSUMER in group $GROUP"

# First what this consumer read before but never acknowledged.
while :; do
    status=0
    read_batch 0 || status=$?
    [ "$status" -ne 1 ] || break
done
# Then new entries, for ever.
while :; do
    read_batch '>' || :
done
