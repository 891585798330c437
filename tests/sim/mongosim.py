#!/usr/bin/python3
"""mongosim: a scripted one-node MongoDB replica set for testing tokenwatch.

Why this exists: the test machines have no MongoDB server, yet tokenwatch must
be tested through the real libmongoc.  mongosim speaks the wire protocol (via
mockupdb) and behaves like the primary of a one-node replica set whose oplog is
*simulated*: a clock, which may run faster than real time, drives periodic
no-op entries and retention truncation, while tests append change events, move
the clock and inject faults through a small HTTP control API.  A test therefore
states a scenario ("a quiet weekend with a 6 hour oplog") instead of scripting
replies one by one, and reads back every command the client sent.

Run it with /usr/bin/python3 (Debian's mockupdb and pymongo live there).  See
README.md next to this file for the CLI, scenario keys and control API.
"""

import argparse
import bisect
import collections
import datetime
import http.server
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

from bson import Int64, Timestamp, json_util
from bson.binary import UuidRepresentation
import mockupdb


# --------------------------------------------------------------------------
# Constants

DEFAULTS = {
    'set_name': 'rs0',
    'max_wire_version': 17,
    'start_time': 1700000000,
    'rate': 1.0,
    'namespace': 'shop.orders',
    'events': 0,
    'background_every': 10,
    'retention': None,
    'initial_oplog_span': 0,
    'batch_size': 100,
    'await_ms': 1000,
}

# Handshake commands: never hit by "any" faults (a heartbeat would eat them at
# a random moment); name them explicitly to fault them.
HANDSHAKE = frozenset({'hello', 'ismaster'})
# Left out of GET /log unless ?all=1: monitoring noise.
QUIET = HANDSHAKE | {'ping'}

MAX_GETMORE_WAIT = 2.0      # real seconds, cap for a getMore's maxTimeMS
POLL_INTERVAL = 0.05        # real seconds between checks of a waiting getMore
TICK = 0.01                 # real seconds between clock ticks

# Resume token tails, appended to '82' + 8 hex digits of t + 8 of i.  The
# KeyString bytes after the timestamp are: version 1 (2B02), tokenType (29 =
# 0 = high-water mark, 2C0100 = 128 = event), txnOpIndex 0 (29), fromInvalidate
# (6E false, 6F true), then a stand-in for uuid/documentKey and the end byte.
EVENT_TAIL = '2B022C0100296E5A1004'
INVALIDATE_TAIL = '2B022C0100296F5A1004'
HWM_TAIL = '2B0229296E04'
# Position of a token within its (t, i): a resume point is strictly after it.
SUB_EVENT, SUB_INVALIDATE, SUB_HWM = 0, 1, 2

HISTORY_LOST_MSG = ('Resume of change stream was not possible, as the resume '
                    'point may no longer be in the oplog.')

CODE_NAMES = {
    1: 'InternalError', 2: 'BadValue', 6: 'HostUnreachable',
    7: 'HostNotFound', 8: 'UnknownError', 9: 'FailedToParse',
    11: 'UserNotFound', 13: 'Unauthorized', 14: 'TypeMismatch',
    18: 'AuthenticationFailed', 43: 'CursorNotFound', 50: 'MaxTimeMSExpired',
    63: 'StaleShardVersion', 73: 'InvalidNamespace', 89: 'NetworkTimeout',
    91: 'ShutdownInProgress', 133: 'FailedToSatisfyReadPreference',
    136: 'CappedPositionLost', 150: 'StaleEpoch', 189: 'PrimarySteppedDown',
    234: 'RetryChangeStream', 237: 'CursorKilled', 260: 'InvalidResumeToken',
    262: 'ExceededTimeLimit', 280: 'ChangeStreamFatalError',
    286: 'ChangeStreamHistoryLost', 9001: 'SocketException',
    10107: 'NotWritablePrimary', 11600: 'InterruptedAtShutdown',
    11601: 'Interrupted', 11602: 'InterruptedDueToReplStateChange',
    13388: 'StaleConfig', 13435: 'NotPrimaryNoSecondaryOk',
    13436: 'NotPrimaryOrSecondary',
}
# errorLabels a real server attaches when a fault does not name any.
DEFAULT_LABELS = {280: ['NonResumableChangeStreamError'],
                  286: ['NonResumableChangeStreamError']}
DEFAULT_ERRMSG = {286: HISTORY_LOST_MSG}

# buildInfo version for a maxWireVersion, so drivers that look see a match.
SERVER_VERSIONS = {6: '3.6.23', 7: '4.0.28', 8: '4.2.24', 9: '4.4.25',
                   13: '5.0.21', 17: '6.0.11', 21: '7.0.2', 25: '8.0.0'}

LOG_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED,
                                 uuid_representation=UuidRepresentation.STANDARD)

VERBOSE = False


def note(msg):
    """Debug output, only with --verbose (quiet by default)."""
    if VERBOSE:
        print('mongosim: ' + msg, file=sys.stderr, flush=True)


def warn(msg):
    """Errors always reach stderr."""
    print('mongosim: ' + msg, file=sys.stderr, flush=True)


class CommandError(Exception):
    """A MongoDB error reply: {ok: 0, errmsg, code, codeName, errorLabels}."""

    def __init__(self, code, errmsg, code_name=None, labels=None):
        super().__init__(errmsg)
        self.code = int(code)
        self.errmsg = errmsg
        self.code_name = code_name or CODE_NAMES.get(self.code,
                                                     'Location%d' % self.code)
        self.labels = list(labels or [])

    def reply(self):
        doc = {'ok': 0, 'errmsg': self.errmsg, 'code': self.code,
               'codeName': self.code_name}
        if self.labels:
            doc['errorLabels'] = self.labels
        return doc


def history_lost():
    return CommandError(286, HISTORY_LOST_MSG,
                        labels=['NonResumableChangeStreamError'])


class BadRequest(Exception):
    """A control-API request we refuse (HTTP 400)."""


# --------------------------------------------------------------------------
# Resume tokens

def _prefix(t, i):
    return '82%08X%08X' % (t, i)


def hwm_token(t, i):
    """High-water-mark token: "everything up to (t, i) has been seen"."""
    return _prefix(t, i) + HWM_TAIL


def event_token(t, i, seq, invalidate=False):
    """Token of the change event at (t, i); sorts after hwm_token(t, i)."""
    tail = INVALIDATE_TAIL if invalidate else EVENT_TAIL
    return _prefix(t, i) + tail + '%016X' % seq + '04'


def parse_token(token):
    """Return (t, i, sub) for a resume token document.

    Any well-formed '82…' token is accepted (tests may build their own); sub
    says where within (t, i) the token sits, see SUB_*.
    """
    data = token.get('_data') if isinstance(token, dict) else None
    if not isinstance(data, str):
        raise CommandError(9, 'resume token must be a document with a string '
                              '_data field')
    try:
        bytes.fromhex(data)
    except ValueError:
        raise CommandError(9, 'resume token string was not a valid hex string')
    if len(data) < 18 or data[:2] != '82':
        raise CommandError(9, 'resume token does not start with a timestamp')
    t, i = int(data[2:10], 16), int(data[10:18], 16)
    tail = data[18:].upper()
    if tail.startswith('2B0229'):
        return t, i, SUB_HWM
    if tail.startswith(INVALIDATE_TAIL[:14]):
        return t, i, SUB_INVALIDATE
    return t, i, SUB_EVENT


def predecessor(t, i):
    """The (t, i) just before a timestamp, so "> pred" means ">= (t, i)"."""
    if i > 0:
        return t, i - 1
    return (t - 1, 0xFFFFFFFF) if t > 0 else (0, 0)


def wall_time(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


def split_ns(ns):
    db, dot, coll = (ns or '').partition('.')
    if not (db and dot and coll):
        raise BadRequest('namespace must look like "db.collection": %r' % ns)
    return db, coll


# --------------------------------------------------------------------------
# Oplog model

class OplogEntry:
    """One oplog document; background no-ops carry no change event."""
    __slots__ = ('t', 'i', 'op', 'ns', 'o')

    def __init__(self, t, i, op, ns, o):
        self.t, self.i, self.op, self.ns, self.o = t, i, op, ns, o

    @property
    def ts(self):
        return (self.t, self.i)

    def document(self):
        return {'ts': Timestamp(self.t, self.i), 't': Int64(1), 'h': Int64(0),
                'v': 2, 'op': self.op, 'ns': self.ns,
                'wall': wall_time(self.t), 'o': dict(self.o)}


class ChangeEvent:
    """A change notification: insert, drop, or the invalidate after a drop."""
    __slots__ = ('t', 'i', 'sub', 'kind', 'db', 'coll', 'seq', 'token')

    def __init__(self, t, i, kind, db, coll, seq):
        self.t, self.i, self.kind = t, i, kind
        self.db, self.coll, self.seq = db, coll, seq
        self.sub = SUB_INVALIDATE if kind == 'invalidate' else SUB_EVENT
        self.token = event_token(t, i, seq, invalidate=kind == 'invalidate')

    @property
    def key(self):
        return (self.t, self.i, self.sub)

    def document(self):
        doc = {'_id': {'_data': self.token}, 'operationType': self.kind,
               'clusterTime': Timestamp(self.t, self.i),
               'wallTime': wall_time(self.t)}
        if self.kind != 'invalidate':
            doc['ns'] = {'db': self.db, 'coll': self.coll}
        if self.kind == 'insert':
            doc['documentKey'] = {'_id': self.seq}
            doc['fullDocument'] = {'_id': self.seq, 'seq': self.seq,
                                   'note': 'sim'}
        return doc


def _event_key(ev):
    return ev.key


class Scope:
    """What a change stream watches: one collection, one database, or all."""
    __slots__ = ('kind', 'db', 'coll')

    def __init__(self, kind, db=None, coll=None):
        self.kind, self.db, self.coll = kind, db, coll

    def matches(self, ev):
        if self.kind == 'collection':
            return ev.db == self.db and ev.coll == self.coll
        if ev.kind == 'invalidate':   # only collection streams are invalidated
            return False
        if self.kind == 'database':
            return ev.db == self.db
        return ev.db not in ('admin', 'config', 'local')

    @property
    def reply_ns(self):
        if self.kind == 'collection':
            return '%s.%s' % (self.db, self.coll)
        return '%s.$cmd.aggregate' % self.db


class Cursor:
    """A change-stream cursor.

    pos: events with key > pos are still to come.  pbrt: the
    postBatchResumeToken last reported, which never moves backwards.
    """
    __slots__ = ('id', 'scope', 'pos', 'pbrt', 'closed')

    def __init__(self, cursor_id, scope, pos, pbrt):
        self.id, self.scope, self.pos, self.pbrt = cursor_id, scope, pos, pbrt
        self.closed = False


class Fault:
    """A pending fault for the next `count` commands named `command`."""

    KINDS = ('error', 'hangup', 'stall')

    def __init__(self, spec):
        self.command = str(spec.get('command', 'any'))
        self.kind = spec.get('kind', 'error')
        if self.kind not in self.KINDS:
            raise BadRequest('fault kind must be one of %s' % (self.KINDS,))
        self.count = _number(spec, 'count', 1, int, minimum=1)
        self.code = _number(spec, 'code', 286, int)
        self.code_name = spec.get('codeName')
        self.errmsg = spec.get('errmsg') or DEFAULT_ERRMSG.get(
            self.code, 'mongosim injected error %d' % self.code)
        labels = spec.get('labels')
        if labels is None:
            labels = DEFAULT_LABELS.get(self.code, [])
        if not (isinstance(labels, list)
                and all(isinstance(x, str) for x in labels)):
            raise BadRequest('labels must be a list of strings')
        self.labels = labels
        self.seconds = _number(spec, 'seconds', 5, float, minimum=0)

    def matches(self, name):
        name = name.lower()
        if self.command.lower() == 'any':
            return name not in HANDSHAKE
        return self.command.lower() == name

    def error(self):
        return CommandError(self.code, self.errmsg, self.code_name,
                            self.labels)

    def describe(self):
        return {'command': self.command, 'kind': self.kind,
                'count': self.count, 'code': self.code}


def _number(spec, key, default, kind, minimum=None):
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest('%s must be a number' % key)
    if kind is int and value != int(value):
        raise BadRequest('%s must be an integer' % key)
    value = kind(value)
    if minimum is not None and value < minimum:
        raise BadRequest('%s must be >= %s' % (key, minimum))
    return value


def _time_arg(value, name):
    if (not isinstance(value, dict) or not isinstance(value.get('t'), int)
            or not isinstance(value.get('i', 0), int)):
        raise BadRequest('%s must be {"t": int, "i": int}' % name)
    return value['t'], value.get('i', 0)


def _tjson(ts):
    return None if ts is None else {'t': ts[0], 'i': ts[1]}


# --------------------------------------------------------------------------
# Simulator: the oplog, the clock, cursors, faults and the command log

class Simulator:
    """All simulated state, guarded by one lock.

    The wire front end and the control API call the public methods; methods
    whose names start with '_' expect the lock to be held.
    """

    def __init__(self, config):
        self.cfg = config
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)   # new events appended
        self.stopping = False

        start = config['start_time']
        self._rate = float(config['rate'])
        self._base_sim = float(start)
        self._base_real = time.monotonic()
        self.every = config['background_every']
        self.retention = config['retention']
        self.default_ns = config['namespace']

        self.entries = collections.deque()   # every oplog entry, oldest first
        self.events = []                     # change events, sorted by key
        self.last_ts = None                  # newest (t, i) ever allocated
        self.increment = 0                   # global, strictly increasing i
        self.truncated_through = None        # newest (t, i) ever removed
        self.next_seq = 1
        self.change_entries = 0              # non-noop entries ever appended

        self.cursors = {}
        self.faults = []
        self.down_until = 0.0
        self.log = []
        self._ticker = None

        self._prefill(start)
        self._next_background = start + self.every

    # ---- clock -----------------------------------------------------------

    def _now(self):
        """Simulated seconds (float)."""
        return self._base_sim + (time.monotonic() - self._base_real) * self._rate

    def _set_rate(self, rate):
        self._base_sim = self._now()
        self._base_real = time.monotonic()
        self._rate = rate

    def _allocate(self, t):
        """Next (t, i): never before the newest entry, i always increasing."""
        t = int(t)
        if self.last_ts is not None:
            t = max(t, self.last_ts[0])
        if t > 0xFFFFFFFF:
            raise BadRequest('simulated time overflowed 32 bits')
        self.increment += 1
        self.last_ts = (t, self.increment)
        return self.last_ts

    def _cluster_ts(self):
        """The newest oplog time, or the clock if nothing was written yet."""
        return self.last_ts or (int(self._now()), 0)

    # ---- appending -------------------------------------------------------

    def _prefill(self, start):
        span = self.cfg['initial_oplog_span']
        if span > 0:
            step = self.every if self.every > 0 else span
            k = 0
            while start - span + k * step < start:
                self._append_noop(start - span + k * step)
                k += 1
        for _ in range(self.cfg['events']):
            self._append_insert(start - 1, *split_ns(self.default_ns))
        # What a primary writes when it takes office.  The oplog is never
        # empty, so a token taken from a fresh simulator stays resumable.
        self._append_noop(start, 'new primary')

    def _append_noop(self, t, msg='periodic noop'):
        t, i = self._allocate(t)
        self.entries.append(OplogEntry(t, i, 'n', '', {'msg': msg}))

    def _append_insert(self, t, db, coll):
        t, i = self._allocate(t)
        seq = self.next_seq
        self.next_seq += 1
        self.entries.append(OplogEntry(
            t, i, 'i', '%s.%s' % (db, coll),
            {'_id': seq, 'seq': seq, 'note': 'sim'}))
        self.change_entries += 1
        ev = ChangeEvent(t, i, 'insert', db, coll, seq)
        self.events.append(ev)
        return ev

    def _append_drop(self, db, coll):
        t, i = self._allocate(self._now())
        self.entries.append(OplogEntry(t, i, 'c', db + '.$cmd', {'drop': coll}))
        self.change_entries += 1
        drop = ChangeEvent(t, i, 'drop', db, coll, 0)
        invalidate = ChangeEvent(t, i, 'invalidate', db, coll, 0)
        self.events.extend([drop, invalidate])
        return drop, invalidate

    # ---- time passing ------------------------------------------------------

    def _catch_up(self):
        """Bring the oplog up to the clock: background entries, retention."""
        now = self._now()
        if self.every > 0:
            if self.retention is not None:
                # Entries retention would remove at once are never written,
                # so a long clock jump stays cheap.
                cutoff = now - self.retention
                if self._next_background < cutoff:
                    skip = math.ceil((cutoff - self._next_background)
                                     / self.every)
                    self._next_background += skip * self.every
            while self._next_background <= now:
                self._append_noop(self._next_background)
                self._next_background += self.every
        if self.retention is not None:
            # Keep t >= now - retention; entries have whole-second t.
            self._truncate_before((math.ceil(now - self.retention), 0))

    def _truncate_before(self, ts):
        """Drop every entry (and its events) with (t, i) < ts, except the
        newest: like a real oplog, it is never emptied."""
        removed = 0
        while len(self.entries) > 1 and self.entries[0].ts < ts:
            last = self.entries.popleft()
            removed += 1
        if removed:
            if self.truncated_through is None or last.ts > self.truncated_through:
                self.truncated_through = last.ts
            n = bisect.bisect_left(self.events, ts + (-1,), key=_event_key)
            del self.events[:n]
        return removed

    def _lost(self, ts):
        """Can a stream no longer start at `ts`?  As on a real server: yes if
        it is older than the oldest entry kept."""
        return ts < self.entries[0].ts

    def _fell_off(self, cursor):
        """Has an entry the open cursor had not read yet been removed?"""
        return (self.truncated_through is not None
                and self.truncated_through > cursor.pos[:2])

    def _tick_loop(self):
        while not self.stopping:
            time.sleep(TICK)
            with self.lock:
                try:
                    self._catch_up()
                except Exception:   # keep ticking whatever happens
                    warn('ticker error:\n' + traceback.format_exc())

    def start_ticker(self):
        self._ticker = threading.Thread(target=self._tick_loop, daemon=True,
                                        name='mongosim-ticker')
        self._ticker.start()

    def shutdown(self):
        with self.lock:
            self.stopping = True
            self.changed.notify_all()

    # ---- change streams ----------------------------------------------------

    def open_change_stream(self, scope, spec, limit):
        """Handle aggregate + $changeStream; returns the reply document."""
        options = [k for k in ('resumeAfter', 'startAfter',
                               'startAtOperationTime') if k in spec]
        if len(options) > 1:
            raise CommandError(40674, 'Only one type of resume option is '
                                      'allowed, but multiple were found.')
        with self.lock:
            self._catch_up()
            if options and options[0] != 'startAtOperationTime':
                option = options[0]
                t, i, sub = parse_token(spec[option])
                if sub == SUB_INVALIDATE and option == 'resumeAfter':
                    raise CommandError(
                        260, "Attempting to resume a change stream using "
                             "'resumeAfter' is not allowed from an invalidate "
                             "notification.")
                start, pos, pbrt = (t, i), (t, i, sub), spec[option]['_data']
            elif options:
                at = spec['startAtOperationTime']
                if not isinstance(at, Timestamp):
                    raise CommandError(14, 'startAtOperationTime must be a '
                                           'timestamp')
                before = predecessor(at.time, at.inc)
                start, pos = (at.time, at.inc), before + (SUB_HWM,)
                pbrt = hwm_token(*before)
            else:
                now = self._cluster_ts()
                start, pos, pbrt = now, now + (SUB_HWM,), hwm_token(*now)
            if self._lost(start):
                raise history_lost()
            cursor_id = self._new_cursor_id()
            cursor = Cursor(cursor_id, scope, pos, pbrt)
            batch = self._scan(cursor, limit)
            self._commit(cursor, batch, limit)
            if not cursor.closed:
                self.cursors[cursor_id] = cursor
            return self._cursor_reply(cursor, batch, 'firstBatch')

    def get_more(self, cursor_id, limit, wait):
        """Handle getMore: wait up to `wait` real seconds for events."""
        deadline = time.monotonic() + wait
        with self.lock:
            cursor = self.cursors.get(cursor_id)
            if cursor is None:
                raise CommandError(43, 'cursor id %d not found' % cursor_id)
            while True:
                self._catch_up()
                if cursor.closed:
                    raise CommandError(237, 'cursor id %d was killed'
                                       % cursor_id)
                if self._fell_off(cursor):
                    # Not polled for longer than the retention, or a backlog
                    # truncated before it was read.
                    self.cursors.pop(cursor_id, None)
                    raise history_lost()
                batch = self._scan(cursor, limit)
                remaining = deadline - time.monotonic()
                if batch or self.stopping or remaining <= 0:
                    break
                self.changed.wait(min(remaining, POLL_INTERVAL))
            self._commit(cursor, batch, limit)
            if cursor.closed:
                self.cursors.pop(cursor_id, None)
            return self._cursor_reply(cursor, batch, 'nextBatch')

    def kill_cursors(self, ids):
        killed, not_found = [], []
        with self.lock:
            for cursor_id in ids:
                cursor = self.cursors.pop(int(cursor_id), None)
                if cursor:
                    cursor.closed = True
                    killed.append(Int64(cursor_id))
                else:
                    not_found.append(Int64(cursor_id))
        return killed, not_found

    def forget_cursor(self, cursor_id):
        """A server-side error ends the cursor, as on a real server."""
        with self.lock:
            cursor = self.cursors.pop(cursor_id, None)
            if cursor:
                cursor.closed = True

    def _new_cursor_id(self):
        while True:
            # Above 32 bits, below 2**53: JSON tools that read numbers as
            # doubles (jq) still see the exact id in GET /log.
            cursor_id = random.randint(1 << 32, (1 << 53) - 1)
            if cursor_id not in self.cursors:
                return cursor_id

    def _scan(self, cursor, limit):
        """Events the cursor would get next (does not move it)."""
        batch = []
        if limit <= 0:
            return batch
        index = bisect.bisect_right(self.events, cursor.pos, key=_event_key)
        for ev in self.events[index:]:
            if cursor.scope.matches(ev):
                batch.append(ev)
                if ev.kind == 'invalidate' or len(batch) >= limit:
                    break
        return batch

    def _commit(self, cursor, batch, limit):
        """Move the cursor past a batch; an empty batch moves it (and its
        postBatchResumeToken) to the newest oplog entry."""
        if batch:
            last = batch[-1]
            cursor.pos, cursor.pbrt = last.key, last.token
            if last.kind == 'invalidate':
                cursor.closed = True
        elif limit > 0 and self.last_ts and self.last_ts > cursor.pos[:2]:
            newest = self.last_ts
            cursor.pos, cursor.pbrt = newest + (SUB_HWM,), hwm_token(*newest)

    def _cursor_reply(self, cursor, batch, field):
        return {'cursor': {'id': Int64(0 if cursor.closed else cursor.id),
                           'ns': cursor.scope.reply_ns,
                           field: [ev.document() for ev in batch],
                           'postBatchResumeToken': {'_data': cursor.pbrt}},
                'operationTime': Timestamp(*self._cluster_ts()),
                'ok': 1}

    # ---- oplog queries -----------------------------------------------------

    def oplog_find(self, query, direction, limit, projection):
        with self.lock:
            self._catch_up()
            entries = reversed(self.entries) if direction < 0 else self.entries
            docs = []
            for entry in entries:
                if len(docs) >= limit:
                    break
                doc = entry.document()
                if not query or matches_query(doc, query):
                    docs.append(project(doc, projection))
            return docs, Timestamp(*self._cluster_ts())

    # ---- control operations ------------------------------------------------

    def append_events(self, count, ns):
        db, coll = split_ns(ns)
        with self.lock:
            self._catch_up()
            now = self._now()
            appended = [self._append_insert(now, db, coll) for _ in range(count)]
            self.changed.notify_all()
        first, last = appended[0], appended[-1]
        return {'first_seq': first.seq, 'last_seq': last.seq,
                'last_token': {'_data': last.token},
                'last_time': _tjson((last.t, last.i))}

    def invalidate(self, ns):
        db, coll = split_ns(ns)
        with self.lock:
            self._catch_up()
            drop, invalidate = self._append_drop(db, coll)
            self.changed.notify_all()
        return {'drop_token': {'_data': drop.token},
                'invalidate_token': {'_data': invalidate.token},
                'time': _tjson((drop.t, drop.i))}

    def set_clock(self, advance, rate):
        with self.lock:
            self._catch_up()
            if rate is not None:
                self._set_rate(rate)
            if advance:
                self._base_sim += advance
                self._catch_up()
        return self.state()

    def set_retention(self, seconds):
        with self.lock:
            self.retention = seconds
            self._catch_up()
        return self.state()

    def truncate(self, before):
        with self.lock:
            self._catch_up()
            removed = self._truncate_before(before)
        state = self.state()
        state['removed'] = removed
        return state

    def add_fault(self, fault):
        with self.lock:
            self.faults.append(fault)
            return [f.describe() for f in self.faults]

    def clear_faults(self):
        with self.lock:
            count = len(self.faults)
            self.faults = []
        return count

    def take_fault(self, name):
        """The first pending fault for this command, used up one at a time."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(name):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def set_down(self, seconds):
        with self.lock:
            self.down_until = time.monotonic() + seconds

    def is_down(self):
        return time.monotonic() < self.down_until

    def state(self):
        with self.lock:
            self._catch_up()
            now = self._now()
            oldest = self.entries[0].ts if self.entries else None
            newest = self.entries[-1].ts if self.entries else None
            return {
                'now': {'t': int(now), 'i': self.increment},
                'oldest': _tjson(oldest), 'newest': _tjson(newest),
                'window_seconds': newest[0] - oldest[0] if oldest else None,
                'entries': len(self.entries),
                'events': self.change_entries,
                'last_seq': self.next_seq - 1,
                'cursors': len(self.cursors),
                'rate': self._rate,
                'retention': self.retention,
                'faults': [f.describe() for f in self.faults],
                'down': self.is_down(),
            }

    # ---- command log -------------------------------------------------------

    def record(self, name, db, collection, doc):
        """Append a received command to the log; returns the entry so the
        caller can add the outcome."""
        with self.lock:
            entry = {'n': len(self.log) + 1, 'command': name, 'db': db,
                     'collection': collection, 'doc': doc,
                     'time': time.time(), 'fault': None, 'reply': None}
            self.log.append(entry)
            return entry

    def log_since(self, since, include_quiet):
        with self.lock:
            entries = [dict(e) for e in self.log[since:]]
        out = []
        for entry in entries:
            if not include_quiet and (entry['command'] or '').lower() in QUIET:
                continue
            entry['doc'] = json.loads(json_util.dumps(entry['doc'],
                                                      json_options=LOG_JSON))
            out.append(entry)
        return out


# --------------------------------------------------------------------------
# A small query matcher for find on local.oplog.rs

def _get_path(doc, path):
    for part in path.split('.'):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _compare(op, value, arg):
    try:
        if op == '$eq':
            return value == arg
        if op == '$ne':
            return value != arg
        if op == '$gt':
            return value is not None and value > arg
        if op == '$gte':
            return value is not None and value >= arg
        if op == '$lt':
            return value is not None and value < arg
        if op == '$lte':
            return value is not None and value <= arg
        if op == '$in':
            return value in arg
        if op == '$nin':
            return value not in arg
        if op == '$exists':
            return (value is not None) == bool(arg)
    except TypeError:   # comparing unlike types never matches
        return False
    raise CommandError(2, 'mongosim does not support the %s operator' % op)


def matches_query(doc, query):
    for path, cond in query.items():
        value = _get_path(doc, path)
        if isinstance(cond, dict) and cond and all(k.startswith('$')
                                                   for k in cond):
            if not all(_compare(op, value, arg) for op, arg in cond.items()):
                return False
        elif value != cond:
            return False
    return True


def project(doc, projection):
    if not projection:
        return doc
    if any(v for v in projection.values()):
        return {k: v for k, v in doc.items() if projection.get(k)}
    return {k: v for k, v in doc.items() if k not in projection}


# --------------------------------------------------------------------------
# Wire protocol front end

class WireFrontend:
    """Answers MongoDB wire-protocol requests on a mockupdb server.

    mockupdb calls responders while holding its own server-wide lock, so a
    responder that waits (an awaiting getMore, a stall) would block every
    other connection.  The responder therefore only logs the request and
    hands it to a thread of its own.
    """

    def __init__(self, sim):
        self.sim = sim
        self.mock = mockupdb.MockupDB(port=0, auto_ismaster=False,
                                      request_timeout=1e6)
        self.port = None
        self.handlers = {
            'hello': self._hello, 'ismaster': self._hello,
            'ping': self._ok, 'endsessions': self._ok,
            'buildinfo': self._build_info,
            'aggregate': self._aggregate, 'getmore': self._get_more,
            'killcursors': self._kill_cursors, 'find': self._find,
        }

    def start(self):
        self.port = self.mock.run()
        # A function as the only argument receives every request.
        self.mock.autoresponds(self._on_request)
        return self.port

    def stop(self, timeout=0.3):
        """mockupdb's stop() can take a second (its accept loop polls);
        don't wait for more than `timeout`."""
        stopper = threading.Thread(target=self.mock.stop, daemon=True)
        stopper.start()
        stopper.join(timeout)

    def _on_request(self, request):
        try:
            name = request.command_name if request.is_command else None
            name = name or type(request).__name__
            doc = request.doc if len(request.docs) == 1 else {}
            collection = doc.get(name) if isinstance(doc.get(name), str) else None
            if name.lower() == 'getmore':
                collection = doc.get('collection')
            entry = self.sim.record(name, request.namespace, collection, doc)
            threading.Thread(target=self._serve, args=(request, name, entry),
                             daemon=True).start()
        except Exception:
            warn('error receiving request:\n' + traceback.format_exc())
        return True

    def _serve(self, request, name, entry):
        try:
            if self.sim.is_down():
                entry['fault'] = 'down'
                request.hangup()
                return
            fault = self.sim.take_fault(name)
            if fault:
                entry['fault'] = fault.kind
                if fault.kind == 'hangup':
                    request.hangup()
                    return
                if fault.kind == 'error':
                    if name.lower() == 'getmore':
                        self.sim.forget_cursor(int(request.doc['getMore']))
                    raise fault.error()
                time.sleep(fault.seconds)   # stall, then answer normally
            if not request.is_command:   # legacy opcodes: nothing to say
                self._send(request, entry, None)
                return
            handler = self.handlers.get(name.lower(), self._unknown)
            reply = handler(request)
        except CommandError as err:
            reply = err.reply()
        except OSError as err:
            note('%s: connection lost: %s' % (name, err))
            return
        except Exception:
            warn('error handling %s:\n%s' % (name, traceback.format_exc()))
            reply = CommandError(1, 'mongosim internal error').reply()
        self._send(request, entry, reply)

    @staticmethod
    def _send(request, entry, reply):
        # Log the outcome first: a test that got the reply must find it.
        entry['reply'] = summarize(reply)
        note('%s -> %s' % (entry['command'], entry['reply']))
        try:
            if reply is None:
                request.replies()
            else:
                request.replies(reply)
        except OSError as err:
            note('could not send reply: %s' % err)

    # ---- commands ------------------------------------------------------------

    def _hello(self, request):
        host = 'localhost:%d' % self.port
        reply = {'ismaster': True, 'isWritablePrimary': True,
                 'setName': self.sim.cfg['set_name'],
                 'hosts': [host], 'primary': host, 'me': host,
                 'maxBsonObjectSize': 16 * 1024 * 1024,
                 'maxMessageSizeBytes': 48000000,
                 'maxWriteBatchSize': 100000,
                 'localTime': datetime.datetime.now(datetime.timezone.utc),
                 'logicalSessionTimeoutMinutes': 30,
                 'minWireVersion': 0,
                 'maxWireVersion': self.sim.cfg['max_wire_version'],
                 'readOnly': False, 'ok': 1}
        if request.doc.get('helloOk'):
            reply['helloOk'] = True
        return reply

    @staticmethod
    def _ok(request):
        return {'ok': 1}

    def _unknown(self, request):
        note('unknown command %r answered ok:1' % request.command_name)
        return {'ok': 1}

    def _build_info(self, request):
        version = SERVER_VERSIONS.get(self.sim.cfg['max_wire_version'], '6.0.11')
        return {'version': version,
                'versionArray': [int(x) for x in version.split('.')] + [0],
                'gitVersion': 'mongosim', 'maxBsonObjectSize': 16 * 1024 * 1024,
                'ok': 1}

    def _aggregate(self, request):
        doc, db = request.doc, request.namespace
        target = doc.get('aggregate')
        pipeline = doc.get('pipeline') or []
        first = pipeline[0] if pipeline and isinstance(pipeline[0], dict) else {}
        client_batch = (doc.get('cursor') or {}).get('batchSize')
        if '$changeStream' not in first:
            ns = '%s.%s' % (db, target if isinstance(target, str) else '$cmd.aggregate')
            return {'cursor': {'id': Int64(0), 'ns': ns, 'firstBatch': []}, 'ok': 1}
        spec = first['$changeStream'] or {}
        if isinstance(target, str):
            scope = Scope('collection', db, target)
        elif spec.get('allChangesForCluster'):
            if db != 'admin':
                raise CommandError(73, '$changeStream with allChangesForCluster'
                                       ' must be run against the admin database')
            scope = Scope('cluster', 'admin')
        elif db in ('admin', 'config', 'local'):
            raise CommandError(73, '$changeStream may not be opened on the '
                                   'internal %s database' % db)
        else:
            scope = Scope('database', db)
        limit = self._batch_limit(client_batch, zero_means_zero=True)
        return self.sim.open_change_stream(scope, spec, limit)

    def _get_more(self, request):
        doc = request.doc
        max_time = doc.get('maxTimeMS')
        if max_time:
            wait = min(float(max_time) / 1000.0, MAX_GETMORE_WAIT)
        else:
            wait = self.sim.cfg['await_ms'] / 1000.0
        limit = self._batch_limit(doc.get('batchSize'), zero_means_zero=False)
        return self.sim.get_more(int(doc['getMore']), limit, wait)

    def _batch_limit(self, client_batch, zero_means_zero):
        limit = self.sim.cfg['batch_size']
        if isinstance(client_batch, int) and not isinstance(client_batch, bool):
            if client_batch > 0:
                limit = min(limit, client_batch)
            elif client_batch == 0 and zero_means_zero:
                limit = 0
        return limit

    def _kill_cursors(self, request):
        killed, not_found = self.sim.kill_cursors(request.doc.get('cursors') or [])
        return {'cursorsKilled': killed, 'cursorsNotFound': not_found,
                'cursorsAlive': [], 'cursorsUnknown': [], 'ok': 1}

    def _find(self, request):
        doc, db = request.doc, request.namespace
        coll = doc.get('find')
        ns = '%s.%s' % (db, coll)
        if (db, coll) != ('local', 'oplog.rs'):
            return {'cursor': {'id': Int64(0), 'ns': ns, 'firstBatch': []}, 'ok': 1}
        direction = 1
        sort = doc.get('sort') or {}
        if sort:
            key, value = next(iter(sort.items()))
            if key in ('$natural', 'ts') and value < 0:
                direction = -1
        limit = abs(int(doc.get('limit') or 0))
        batch = int(doc.get('batchSize') or 0)
        count = min(x for x in (limit, batch, 101) if x > 0)
        docs, op_time = self.sim.oplog_find(doc.get('filter') or {}, direction,
                                            count, doc.get('projection'))
        return {'cursor': {'id': Int64(0), 'ns': ns, 'firstBatch': docs},
                'operationTime': op_time, 'ok': 1}


def summarize(reply):
    """A short, JSON-friendly outcome for the command log."""
    if not reply:
        return {'ok': 1}
    out = {'ok': reply.get('ok', 1)}
    if reply.get('ok', 1) == 0:
        out['code'] = reply.get('code')
        return out
    cursor = reply.get('cursor')
    if isinstance(cursor, dict):
        batch = cursor.get('firstBatch', cursor.get('nextBatch', []))
        out['cursor'] = int(cursor.get('id', 0))
        out['batch'] = len(batch)
        seqs = [d['fullDocument']['seq'] for d in batch
                if isinstance(d.get('fullDocument'), dict)
                and 'seq' in d['fullDocument']]
        if seqs:
            out['seqs'] = seqs
        if 'postBatchResumeToken' in cursor:
            out['postBatchResumeToken'] = cursor['postBatchResumeToken']['_data']
    return out


# --------------------------------------------------------------------------
# HTTP control API

class ControlServer(http.server.ThreadingHTTPServer):
    """The test's handle on the simulator (JSON in, JSON out)."""

    daemon_threads = True

    def __init__(self, sim, stop_event):
        super().__init__(('127.0.0.1', 0), ControlHandler)
        self.sim = sim
        self.stop_event = stop_event

    def start(self):
        threading.Thread(target=self.serve_forever, kwargs={'poll_interval': 0.05},
                         daemon=True, name='mongosim-control').start()
        return self.server_address[1]


class ControlHandler(http.server.BaseHTTPRequestHandler):
    server_version = 'mongosim/1'

    def log_message(self, fmt, *args):
        note('control: ' + fmt % args)

    def do_GET(self):
        self._handle('GET')

    def do_POST(self):
        self._handle('POST')

    def do_DELETE(self):
        self._handle('DELETE')

    def _handle(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        route = ROUTES.get((method, url.path.rstrip('/') or '/'))
        try:
            if route is None:
                return self._respond(404, {'error': 'no route %s %s'
                                           % (method, url.path)})
            result = route(self.server.sim, self._body(), query)
            self._respond(200, result)
            if url.path.rstrip('/') == '/stop':
                self.server.stop_event.set()
        except BadRequest as err:
            self._respond(400, {'error': str(err)})
        except Exception as err:
            warn('control error:\n' + traceback.format_exc())
            self._respond(500, {'error': repr(err)})

    def _body(self):
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise BadRequest('body is not JSON: %s' % err)
        if not isinstance(body, dict):
            raise BadRequest('body must be a JSON object')
        return body

    def _respond(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _route_state(sim, body, query):
    return sim.state()


def _route_log(sim, body, query):
    try:
        since = int(query.get('since', ['0'])[0])
    except ValueError:
        raise BadRequest('since must be an integer')
    include_quiet = query.get('all', ['0'])[0] not in ('0', '', 'false')
    return sim.log_since(max(since, 0), include_quiet)


def _route_events(sim, body, query):
    if body.get('op', 'insert') != 'insert':
        raise BadRequest('only op "insert" is supported')
    count = _number(body, 'count', 1, int, minimum=1)
    return sim.append_events(count, body.get('ns') or sim.default_ns)


def _route_invalidate(sim, body, query):
    return sim.invalidate(body.get('ns') or sim.default_ns)


def _route_clock(sim, body, query):
    advance = _number(body, 'advance', 0, float, minimum=0)
    rate = _number(body, 'rate', 0, float, minimum=0) if 'rate' in body else None
    return sim.set_clock(advance, rate)


def _route_retention(sim, body, query):
    if 'seconds' not in body:
        raise BadRequest('give {"seconds": N} or {"seconds": null}')
    seconds = body['seconds']
    if seconds is not None:
        seconds = _number(body, 'seconds', 0, float, minimum=0)
    return sim.set_retention(seconds)


def _route_truncate(sim, body, query):
    return sim.truncate(_time_arg(body.get('before'), 'before'))


def _route_fault(sim, body, query):
    return {'pending': sim.add_fault(Fault(body))}


def _route_clear_faults(sim, body, query):
    return {'cleared': sim.clear_faults()}


def _route_down(sim, body, query):
    seconds = _number(body, 'seconds', 5, float, minimum=0)
    sim.set_down(seconds)
    return {'down_for': seconds}


def _route_stop(sim, body, query):
    return {'stopping': True}


ROUTES = {
    ('GET', '/state'): _route_state,
    ('GET', '/log'): _route_log,
    ('POST', '/events'): _route_events,
    ('POST', '/invalidate'): _route_invalidate,
    ('POST', '/clock'): _route_clock,
    ('POST', '/retention'): _route_retention,
    ('POST', '/truncate'): _route_truncate,
    ('POST', '/fault'): _route_fault,
    ('DELETE', '/fault'): _route_clear_faults,
    ('POST', '/down'): _route_down,
    ('POST', '/stop'): _route_stop,
}


# --------------------------------------------------------------------------
# Startup

def load_scenario(path):
    """Scenario JSON merged over DEFAULTS; unknown keys are typos, so they are
    refused (keys starting with '_' and "description" are comments)."""
    config = dict(DEFAULTS)
    if not path:
        return config
    with open(path) as f:
        scenario = json.load(f)
    if not isinstance(scenario, dict):
        raise BadRequest('scenario must be a JSON object')
    for key, value in scenario.items():
        if key.startswith('_') or key == 'description':
            continue
        if key not in DEFAULTS:
            raise BadRequest('unknown scenario key %r' % key)
        config[key] = value
    ints = ('max_wire_version', 'start_time', 'events', 'batch_size')
    for key in ints:
        config[key] = _number(config, key, None, int, minimum=0)
    for key in ('rate', 'background_every', 'initial_oplog_span', 'await_ms'):
        config[key] = _number(config, key, None, float, minimum=0)
    if config['retention'] is not None:
        config['retention'] = _number(config, 'retention', None, float, minimum=0)
    if config['batch_size'] < 1:
        raise BadRequest('batch_size must be >= 1')
    if config['initial_oplog_span'] > config['start_time']:
        raise BadRequest('initial_oplog_span reaches before time 0')
    if not isinstance(config['set_name'], str) or not config['set_name']:
        raise BadRequest('set_name must be a non-empty string')
    split_ns(config['namespace'])
    return config


def write_port_file(path, info):
    """Write atomically: readers see the whole file or none."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.mongosim-', dir=directory)
    with os.fdopen(fd, 'w') as f:
        json.dump(info, f)
    os.replace(tmp, path)


def main(argv=None):
    global VERBOSE
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--port-file', required=True,
                        help='where to write {"mongo_port", "control_port", "pid"}')
    parser.add_argument('--scenario', help='scenario JSON file')
    parser.add_argument('--verbose', action='store_true',
                        help='log every command and control request to stderr')
    args = parser.parse_args(argv)
    VERBOSE = args.verbose

    try:
        config = load_scenario(args.scenario)
    except (OSError, ValueError, BadRequest) as err:
        warn('bad scenario %s: %s' % (args.scenario, err))
        return 2

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    sim = Simulator(config)
    wire = WireFrontend(sim)
    mongo_port = wire.start()
    control = ControlServer(sim, stop)
    control_port = control.start()
    sim.start_ticker()
    write_port_file(args.port_file, {'mongo_port': mongo_port,
                                     'control_port': control_port,
                                     'pid': os.getpid()})
    warn('mongodb://localhost:%d/?replicaSet=%s control http://127.0.0.1:%d'
         % (mongo_port, config['set_name'], control_port))

    while not stop.wait(0.5):
        pass

    sim.shutdown()
    control.shutdown()
    control.server_close()
    wire.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
