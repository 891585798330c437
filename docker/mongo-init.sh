#!/bin/sh
# One-shot (compose service mongo-init, image mongo:7, which has mongosh):
# makes the compose "mongo" server a one-node replica set, since change
# streams need one. Waits until the server answers, initiates the set unless
# it already is (a restart with the data volume), then waits for a primary.
# Exits 0 when the primary is up; tokenwatch and the consumer start after it
# (depends_on: condition: service_completed_successfully).
#
# Settings (environment):
#   MONGO_HOST    the member as the other services reach it (mongo:27017);
#                 also the host name recorded in the replica set config
#   REPLICA_SET   the set's name, as mongod --replSet (rs0)
#   TRIES         seconds to wait for the server, then for a primary (120)
set -eu

MONGO_HOST="${MONGO_HOST:-mongo:27017}"
REPLICA_SET="${REPLICA_SET:-rs0}"
TRIES="${TRIES:-120}"
export MONGO_HOST REPLICA_SET TRIES

# Before rs.initiate there is no replica set to discover: talk to the one
# server directly.
uri="mongodb://$MONGO_HOST/?directConnection=true"

tries=0
until mongosh "$uri" --quiet --eval 'db.adminCommand({ ping: 1 }).ok' >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge "$TRIES" ]; then
        echo "mongo-init: $MONGO_HOST did not answer within $TRIES tries" >&2
        exit 1
    fi
    echo "mongo-init: waiting for $MONGO_HOST"
    sleep 1
done

# The values come in through the environment (process.env), not by pasting
# them into the script; the ${...} below are JavaScript template literals.
# shellcheck disable=SC2016
exec mongosh "$uri" --quiet --eval '
const set = process.env.REPLICA_SET;
const host = process.env.MONGO_HOST;
const tries = parseInt(process.env.TRIES, 10);
try {
    const status = rs.status();
    print(`mongo-init: replica set ${status.set} already initiated`);
} catch (e) {
    if (e.codeName !== "NotYetInitialized" && e.code !== 94) throw e;
    rs.initiate({ _id: set, members: [{ _id: 0, host: host }] });
    print(`mongo-init: initiated replica set ${set} with member ${host}`);
}
for (let n = 0; !db.hello().isWritablePrimary; n++) {
    if (n >= tries) throw new Error(`no primary after ${tries} s`);
    sleep(1000);
}
print(`mongo-init: ${host} is the primary of ${set}`);
'
