#!/bin/bash
# make image-test: docker/Dockerfile built and run for real (tests/deploy/README.md).
#
# Builds the image, runs it with --network host against a redis-server and the
# scripted MongoDB (tests/sim/mongosim.py) on free loopback ports, and checks:
# `tokenwatch healthcheck` inside it and the HEALTHCHECK status, the uid (10001,
# not root), events and the checkpoint in Redis, and that `docker stop` writes
# the last checkpoint and the container exits 0. Prints the image's size, the
# container's memory and how long each step took. Exit 0 when every check
# passes, 1 when one fails (saying which), 2 when it cannot run at all.
#
# What it needs, it installs when run as root (docker.io, debootstrap,
# redis-server, python3-mockupdb). Docker is Debian's docker.io, called by its
# own path: /usr/bin/docker and /usr/sbin/dockerd. When no daemon answers it
# starts one (its data under $STATE, no bridge, no iptables rules) and stops
# it at the end; a daemon that was already running is left running.
#
# No image can be pulled here, so debian:12 and debian:12-slim, when the
# daemon lacks them, are made with debootstrap (minbase, the variant Debian's
# official images are made from) and `docker import`. The root filesystems are
# kept as tarballs under $STATE/cache, so only the first run downloads them.
#
# Settings (environment):
#   IMAGE_TEST_STATE   cache and the started daemon's data (/var/lib/tokenwatch-image-test)
#   IMAGE_TEST_MIRROR  Debian mirror for debootstrap and apt (http://deb.debian.org/debian)
#   IMAGE_TEST_SECURITY_MIRROR  (http://deb.debian.org/debian-security)
#   IMAGE_TEST_TAG     the image built ($TAG below)
#   IMAGE_TEST_KEEP=1  keep the work directory (logs) even when all passes
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${IMAGE_TEST_STATE:-/var/lib/tokenwatch-image-test}
MIRROR=${IMAGE_TEST_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${IMAGE_TEST_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
TAG=${IMAGE_TEST_TAG:-tokenwatch:image-test}
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
PY=/usr/bin/python3
PACKAGES="docker.io debootstrap redis-server python3-mockupdb"
# Bumped whenever make_rootfs changes: older cached tarballs and images are
# then made again.
BASE_RECIPE=1
NAME=imagetest
CHECKPOINT_KEY="tokenwatch:{$NAME}:checkpoint"
STREAM_KEY="tokenwatch:{$NAME}:events"
STARTED=$(date +%s)

WORK=""
CONTAINER=""
REDIS_PID=""
SIM_PID=""
DOCKERD_PID=""
CGROUP_MOUNTED=""
RUN_DIR=/run/tokenwatch-image-test
OWN_SOCK="unix://$RUN_DIR/docker.sock"
FAILED=0

say() { printf 'image-test: %s\n' "$*"; }

# A check failed: say which, show what the container logged, exit 1.
fail() {
    FAILED=1
    printf 'image-test: FAIL: %s\n' "$*" >&2
    if [ -n "$CONTAINER" ]; then
        echo "image-test: the container's last log lines:" >&2
        "$DOCKER" logs --tail 30 "$CONTAINER" 2>&1 | sed 's/^/  | /' >&2 || true
    fi
    exit 1
}

# It cannot run here at all.
cannot() {
    FAILED=1
    printf 'image-test: cannot run: %s\n' "$*" >&2
    exit 2
}

cleanup() {
    local code=$?
    set +e
    if [ -n "$CONTAINER" ]; then
        "$DOCKER" rm -f "$CONTAINER" >/dev/null 2>&1
    fi
    for pid in "$SIM_PID" "$REDIS_PID"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    if [ -n "$DOCKERD_PID" ]; then
        say "stopping the dockerd this run started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 150); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            say "dockerd did not stop in 30 s: killing it"
            kill -9 "$DOCKERD_PID" 2>/dev/null
        fi
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    if [ -n "$CGROUP_MOUNTED" ]; then
        umount /sys/fs/cgroup 2>/dev/null
    fi
    if [ -n "$WORK" ]; then
        if [ "$code" -ne 0 ] || [ "$FAILED" -ne 0 ] || [ "${IMAGE_TEST_KEEP:-0}" = 1 ]; then
            say "logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

elapsed() { echo $(($(date +%s) - $1)); }
now_ms() { date +%s%3N; }

# ------------------------------------------------------------------ helpers

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

json_field() { # json_field FILE KEY
    "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# The simulator's control API: control METHOD PATH [JSON] prints the reply.
control() {
    "$PY" - "$SIM_CONTROL" "$@" <<'EOF'
import sys, urllib.request
port, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=10).read().decode())
EOF
}

# The _data of the last event a POST /events reply names.
last_token() {
    "$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["last_token"]["_data"])' "$1"
}

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# The checkpoint hash as "EVENTS _DATA" ("none" when there is none).
checkpoint() {
    local events token
    events=$(rcli hget "$CHECKPOINT_KEY" events)
    token=$(rcli hget "$CHECKPOINT_KEY" token)
    if [ -z "$token" ]; then
        echo none
        return
    fi
    printf '%s %s\n' "$events" \
        "$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["_data"])' "$token")"
}

# A counter from the container's /metrics ("" when it cannot be read).
metric() {
    "$PY" - "$METRICS_PORT" "$1" <<'EOF' 2>/dev/null || true
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.split(" ")[0] == name:
        print(int(float(line.split(" ")[1])))
EOF
}

# wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + seconds))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${seconds} s"
        sleep 0.2
    done
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# ------------------------------------------------------------------ 1. tools

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
    [ "$(id -u)" -eq 0 ] || cannot "missing:$missing; as root: $command"
    say "installing:$missing"
    apt-get update >/dev/null
    # shellcheck disable=SC2086 # one word per package, on purpose
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >/dev/null
fi
for tool in "$DOCKER" "$DOCKERD" "$PY" /usr/sbin/debootstrap redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || cannot "$tool not found"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tokenwatch-image-test-XXXXXX")

# ------------------------------------------------------------------ 2. daemon

answers() { DOCKER_HOST=$1 "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

daemon=""
for host in "${DOCKER_HOST:-unix:///var/run/docker.sock}" "$OWN_SOCK"; do
    if answers "$host"; then
        daemon=$host
        break
    fi
done
if [ -n "$daemon" ]; then
    export DOCKER_HOST="$daemon"
    say "using the Docker daemon at $daemon ($("$DOCKER" version --format '{{.Server.Version}}')); it is left running"
else
    [ "$(id -u)" -eq 0 ] || cannot "no Docker daemon answers, and only root can start one"
    mkdir -p "$STATE/docker" "$RUN_DIR"
    # A bare root (a chroot with /sys but no cgroup file system mounted, as
    # some CI machines are) gives dockerd no cgroups: "Devices cgroup isn't
    # mounted". Mount the unified hierarchy there for this run.
    if ! awk '$2 == "/sys/fs/cgroup" { found = 1 } END { exit !found }' /proc/mounts &&
        [ -d /sys/fs/cgroup ] && mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null; then
        CGROUP_MOUNTED=1
        say "mounted cgroup2 at /sys/fs/cgroup (none was mounted); unmounted at the end"
    fi
    # No bridge and no iptables rules: every container here (the build's RUN
    # steps too) uses the host's network, so the host's network is left alone.
    # A session of its own: a Ctrl-C reaches this script, whose cleanup
    # removes the container before it stops the daemon, not dockerd itself.
    setsid "$DOCKERD" --data-root "$STATE/docker" --exec-root "$RUN_DIR/exec" \
        --pidfile "$RUN_DIR/dockerd.pid" -H "$OWN_SOCK" \
        --bridge none --iptables=false --ip-masq=false \
        >>"$STATE/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="$OWN_SOCK"
    for _ in $(seq 1 300); do
        answers "$OWN_SOCK" && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || {
            tail -20 "$STATE/dockerd.log" >&2
            DOCKERD_PID=""
            cannot "dockerd exited at start (log: $STATE/dockerd.log)"
        }
        sleep 0.2
    done
    answers "$OWN_SOCK" || cannot "dockerd started but does not answer at $OWN_SOCK within 60 s"
    say "started dockerd $("$DOCKER" version --format '{{.Server.Version}}') (pid $DOCKERD_PID, data $STATE/docker, log $STATE/dockerd.log)"
    # This daemon is this run's alone: containers of an earlier run that was
    # killed before its cleanup go now.
    "$DOCKER" ps -aq --filter label=org.tokenwatch.image-test | xargs -r "$DOCKER" rm -f >/dev/null
fi

# Can this daemon unpack a layer here at all? In a chroot whose / is not a
# mount point it cannot ("remount /, flags: 0x84000: invalid argument"): that
# is this machine, not the image, so exit 2, not a failed check.
probe_err=$(tar -cf - -T /dev/null | "$DOCKER" import - tokenwatch-image-test-probe:latest 2>&1 >/dev/null) ||
    cannot "this Docker cannot unpack an image here: $probe_err"
"$DOCKER" rmi tokenwatch-image-test-probe:latest >/dev/null 2>&1 || true

# ------------------------------------------------------------------ 3. base images

# debootstrap's minbase with what Debian's official images add (apt sources
# with updates and security, apt's caches and .debs removed after every
# install, no translations, no services started at install), apt lists and
# /dev emptied. slim: also no documentation, man pages or translations, as in
# the official -slim images.
make_rootfs() {
    local rootfs=$WORK/rootfs
    say "debootstrap --variant=minbase bookworm ($MIRROR)"
    /usr/sbin/debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || {
        tail -20 "$WORK/debootstrap.log" >&2
        cannot "debootstrap failed (log: $WORK/debootstrap.log)"
    }
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    rm -rf "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/var/cache/apt/archives/*.deb \
        "${rootfs:?}"/var/cache/apt/*.bin "${rootfs:?}"/dev/* "${rootfs:?}"/var/log/bootstrap.log
    mkdir -p "$rootfs/var/lib/apt/lists/partial"
    tar -C "$rootfs" --numeric-owner -cf "$CACHE/debian-12.tar.tmp" .
    mv "$CACHE/debian-12.tar.tmp" "$CACHE/debian-12.tar"

    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# As in the official -slim images: no documentation, man pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "${rootfs:?}"/usr/share/groff/* "${rootfs:?}"/usr/share/info/* "${rootfs:?}"/usr/share/linda/* \
        "${rootfs:?}"/usr/share/lintian/overrides/* "${rootfs:?}"/usr/share/locale/* "${rootfs:?}"/usr/share/man/*
    tar -C "$rootfs" --numeric-owner -cf "$CACHE/debian-12-slim.tar.tmp" .
    mv "$CACHE/debian-12-slim.tar.tmp" "$CACHE/debian-12-slim.tar"
    rm -rf "$rootfs"
}

# An image to import: absent, or one of ours made by an older recipe.
wants_import() {
    local recipe
    recipe=$("$DOCKER" image inspect -f '{{index .Config.Labels "org.tokenwatch.base-recipe"}}' "$1" 2>/dev/null) ||
        return 0
    [ -n "$recipe" ] && [ "$recipe" != "<no value>" ] && [ "$recipe" != "$BASE_RECIPE" ]
}

step=$(date +%s)
CACHE=$STATE/cache/bookworm-minbase-$BASE_RECIPE
if wants_import debian:12 || wants_import debian:12-slim; then
    mkdir -p "$CACHE"
    if [ -s "$CACHE/debian-12.tar" ] && [ -s "$CACHE/debian-12-slim.tar" ]; then
        say "base images from the cached root filesystems in $CACHE"
    else
        [ "$(id -u)" -eq 0 ] || cannot "debian:12 and debian:12-slim are missing, and only root can debootstrap them"
        make_rootfs
    fi
    for image in debian:12 debian:12-slim; do
        wants_import "$image" || continue
        "$DOCKER" import --change 'CMD ["bash"]' \
            --change "LABEL org.tokenwatch.base-recipe=$BASE_RECIPE" \
            - "$image" <"$CACHE/debian-${image#debian:}.tar" >/dev/null
        say "imported $image ($(mib "$("$DOCKER" image inspect -f '{{.Size}}' "$image")"))"
    done
else
    say "base images debian:12 and debian:12-slim already there"
fi
BASE_SECONDS=$(elapsed "$step")

# ------------------------------------------------------------------ 4. build

step=$(date +%s)
old_id=$("$DOCKER" image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
say "docker build -f docker/Dockerfile -t $TAG (log: $WORK/build.log)"
# The classic builder, with the host's network for apt in the RUN steps.
if ! DOCKER_BUILDKIT=0 "$DOCKER" build --network host -f "$ROOT/docker/Dockerfile" \
    -t "$TAG" "$ROOT" >"$WORK/build.log" 2>&1; then
    tail -30 "$WORK/build.log" >&2
    fail "docker build failed (log: $WORK/build.log)"
fi
BUILD_SECONDS=$(elapsed "$step")
new_id=$("$DOCKER" image inspect -f '{{.Id}}' "$TAG")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    "$DOCKER" image rm "$old_id" >/dev/null 2>&1 || true # the previous run's, now untagged
fi
IMAGE_BYTES=$("$DOCKER" image inspect -f '{{.Size}}' "$TAG")
say "built $TAG in ${BUILD_SECONDS} s: $(mib "$IMAGE_BYTES")"

# ------------------------------------------------------------------ 5. run

step=$(date +%s)
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --save '' \
    --appendonly no --logfile "$WORK/redis.log" --daemonize no &
REDIS_PID=$!
redis_up() { rcli ping >/dev/null 2>&1; }
wait_for 10 "redis-server answering on port $REDIS_PORT" redis_up

# No background no-ops: the newest oplog entry is always the last event, so
# the checkpoint's token can be compared with it exactly.
echo '{"background_every": 0}' >"$WORK/scenario.json"
"$PY" "$ROOT/tests/sim/mongosim.py" --port-file "$WORK/sim.json" \
    --scenario "$WORK/scenario.json" 2>"$WORK/sim.log" &
SIM_PID=$!
wait_for 20 "the simulator's port file" test -s "$WORK/sim.json"
SIM_CONTROL=$(json_field "$WORK/sim.json" control_port)
MONGO_URI=$(json_field "$WORK/sim.json" uri)
METRICS_PORT=$(free_port)

# As the Kubernetes manifest runs it: read-only root, no capabilities. The
# HEALTHCHECK is the image's own command, run every second instead of every
# 30 s so that the test need not wait for it. A checkpoint after every 5
# events and otherwise once an hour: events 6 to 8 below are only written
# by the stop.
CONTAINER=tokenwatch-image-test-$$
"$DOCKER" run -d --name "$CONTAINER" --label org.tokenwatch.image-test --network host \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --health-interval 1s --health-retries 3 \
    -e TOKENWATCH_NAME="$NAME" \
    -e TOKENWATCH_MONGO_URI="$MONGO_URI" \
    -e TOKENWATCH_DB=shop -e TOKENWATCH_COLLECTION=orders \
    -e TOKENWATCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
    -e TOKENWATCH_SINK=redis \
    -e TOKENWATCH_METRICS_ADDR="127.0.0.1:$METRICS_PORT" \
    -e TOKENWATCH_CHECKPOINT_EVERY=5 -e TOKENWATCH_CHECKPOINT_INTERVAL=1h \
    "$TAG" >/dev/null || fail "docker run failed"
say "running $CONTAINER: MongoDB (simulated) at $MONGO_URI, Redis on port $REDIS_PORT, metrics on port $METRICS_PORT"

healthcheck() { "$DOCKER" exec "$CONTAINER" tokenwatch healthcheck >/dev/null 2>&1; }
wait_for 30 "docker exec $CONTAINER tokenwatch healthcheck exiting 0" healthcheck
say "ok: docker exec ... tokenwatch healthcheck exits 0"

health() { [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CONTAINER")" = healthy ]; }
wait_for 30 "the HEALTHCHECK status becoming healthy" health
say "ok: HEALTHCHECK status: healthy"

exec_uid=$("$DOCKER" exec "$CONTAINER" id -u)
pid=$("$DOCKER" inspect -f '{{.State.Pid}}' "$CONTAINER")
proc_uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
[ "$exec_uid" = 10001 ] || fail "docker exec runs as uid $exec_uid, not 10001"
[ "$proc_uids" = "10001 10001 10001 10001" ] ||
    fail "tokenwatch (pid $pid) runs as uids $proc_uids (real, effective, saved, fs), not 10001"
say "ok: uid 10001, not root (docker exec id -u, and every uid of tokenwatch, pid $pid)"

has_checkpoint() { [ "$(checkpoint)" != none ]; }
wait_for 20 "the first checkpoint in $CHECKPOINT_KEY" has_checkpoint
say "ok: the checkpoint hash exists from the start: $(rcli hget "$CHECKPOINT_KEY" cluster_time)"

first=$(control POST /events '{"count": 5}')
first_token=$(last_token "$first")
committed_first() { [ "$(checkpoint)" = "5 $first_token" ] && [ "$(rcli xlen "$STREAM_KEY")" = 5 ]; }
wait_for 20 "5 events in $STREAM_KEY and the checkpoint at the 5th (its token $first_token)" committed_first
say "ok: 5 events in $STREAM_KEY; the checkpoint is at the 5th event's token"

second=$(control POST /events '{"count": 3}')
second_token=$(last_token "$second")
followed() { [ "$(metric tokenwatch_events_total)" = 8 ]; }
wait_for 20 "tokenwatch_events_total reaching 8" followed
before=$(checkpoint)
[ "$before" = "5 $first_token" ] ||
    fail "before the stop the checkpoint should still be at the 5th event ($first_token), it is: $before"
[ "$(rcli xlen "$STREAM_KEY")" = 5 ] || fail "events 6 to 8 reached the stream before the stop"
say "ok: 8 events handed on, the checkpoint still at the 5th (the next is due after 5 more or in an hour)"

# Memory: docker stats (the cgroup's usage less its inactive page cache);
# the cgroup's anonymous memory and page cache apart (the libraries' pages
# count here only when this container read them first: not when they were
# still cached from an earlier run); tokenwatch's resident set (its shared
# libraries' pages included).
stats_mem=$("$DOCKER" stats --no-stream --format '{{.MemUsage}}' "$CONTAINER" | awk -F' / ' '{ print $1 }')
cgroup_mem=""
v1=$(awk -F: '$2 == "memory" { print $3 }' "/proc/$pid/cgroup")
v2=$(awk -F: '$1 == "0" && $2 == "" { print $3 }' "/proc/$pid/cgroup")
if [ -n "$v1" ] && [ -r "/sys/fs/cgroup/memory$v1/memory.stat" ]; then
    cgroup_mem=$(awk '$1 == "total_rss" { a = $2 } $1 == "total_cache" { c = $2 }
        END { printf "anonymous %.1f MiB, page cache %.1f MiB", a / 1048576, c / 1048576 }' \
        "/sys/fs/cgroup/memory$v1/memory.stat")
elif [ -n "$v2" ] && [ -r "/sys/fs/cgroup$v2/memory.stat" ]; then
    cgroup_mem=$(awk '$1 == "anon" { a = $2 } $1 == "file" { c = $2 }
        END { printf "anonymous %.1f MiB, page cache %.1f MiB", a / 1048576, c / 1048576 }' \
        "/sys/fs/cgroup$v2/memory.stat")
fi
rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
RUN_SECONDS=$(elapsed "$step")

stop_started=$(now_ms)
"$DOCKER" stop -t 30 "$CONTAINER" >/dev/null || fail "docker stop failed"
STOP_MS=$(($(now_ms) - stop_started))
exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CONTAINER")
oom=$("$DOCKER" inspect -f '{{.State.OOMKilled}}' "$CONTAINER")
[ "$exit_code" = 0 ] || fail "after docker stop the container exited $exit_code (OOMKilled: $oom), not 0"
say "ok: docker stop: exit code 0, in $STOP_MS ms"
after=$(checkpoint)
[ "$after" = "8 $second_token" ] ||
    fail "after the stop the checkpoint should be at the 8th event ($second_token), it is: $after"
[ "$(rcli xlen "$STREAM_KEY")" = 8 ] ||
    fail "after the stop $STREAM_KEY holds $(rcli xlen "$STREAM_KEY") events, not 8"
say "ok: the stop wrote the last checkpoint: events 5 -> 8, token = the simulator's last event ($second_token)"
"$DOCKER" logs "$CONTAINER" >"$WORK/container.log" 2>&1 || true

# ------------------------------------------------------------------ figures

say "figures:"
say "  image $TAG: $(mib "$IMAGE_BYTES") ($IMAGE_BYTES bytes)"
say "  container memory while following: $stats_mem (docker stats); the cgroup's ${cgroup_mem:-memory.stat unreadable}; tokenwatch's RSS $(mib $((rss_kib * 1024)))"
say "  time: base images ${BASE_SECONDS} s, build ${BUILD_SECONDS} s, run and checks ${RUN_SECONDS} s, stop $STOP_MS ms; in all $(elapsed "$STARTED") s"
say "PASS"
