#!/bin/sh
# Installs the Debian packages tokenwatch builds and tests with, when any is
# missing. As root it runs apt-get (update first); otherwise it prints the
# exact command and fails, so a missing package never surfaces later as a
# confusing compile error. clang and its runtime (libFuzzer and the
# sanitizers, only recommended by clang) build the `make fuzz` targets.
# prometheus (for its promtool) and docker-compose (1.29: `config` needs no
# Docker engine) are for `make deploy-check`. Docker itself is not here:
# `make image-test` installs docker.io and debootstrap when it runs.
set -eu

PACKAGES="gcc make pkg-config libmongoc-dev libbson-dev libhiredis-dev \
libcurl4-openssl-dev libssl-dev libcriterion-dev libmicrohttpd-dev redis-server \
python3-mockupdb python3-pymongo python3-yaml shellcheck procps \
clang libclang-rt-dev stunnel4 openssl prometheus docker-compose"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "deps: all packages present"
    exit 0
fi

command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing:$missing" >&2
    echo "deps: run as root: $command" >&2
    exit 1
fi
echo "deps: installing:$missing"
apt-get update
# shellcheck disable=SC2086 # one word per package, on purpose
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
