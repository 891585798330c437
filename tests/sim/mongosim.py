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
import heapq
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

import bson
from bson import Int64, Timestamp, json_util
from bson.binary import UuidRepresentation
import mockupdb


# --------------------------------------------------------------------------
# Constants

PROFILES = ('mongodb', 'documentdb', 'mongos')

DEFAULTS = {
    'profile': 'mongodb',
    'set_name': 'rs0',
    'max_wire_version': None,      # 17 (6.0), or 13 (5.0) for documentdb
    'start_time': 1700000000,
    'rate': 1.0,
    'namespace': 'shop.orders',
    'events': 0,
    'background_every': 10,
    'retention': None,
    'history_extra': 0,
    'truncate_markers': 0,
    'shards': None,
    'initial_oplog_span': 0,
    'batch_size': 100,
    'await_ms': 1000,
    'operation_time': True,        # replies carry operationTime
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
CAPPED_LOST_MSG = ('CollectionScan died due to position in capped collection '
                   'being deleted')
NOT_FOUND_MSG = 'cannot resume stream; the resume token was not found. '
SPLIT_STAGE = '$changeStreamSplitLargeEvent'

# Sizes: a change event over BSONObjMaxInternalSize fails with 10334 (the
# server's errmsg names 16793600); a batch, and each fragment of a split
# event, stays within BSONObjMaxUserSize.
MAX_EVENT_BYTES = 16 * 1024 * 1024 + 16 * 1024
MAX_USER_BYTES = 16 * 1024 * 1024
# Room kept in a fragment for its _id and splitEvent.
FRAGMENT_OVERHEAD = 256

# DocumentDB layout ('01'): lowercase hex, as in AWS's examples.  Tails
# after '01' + %08x t + %08x i: an event '01' + %016x seq, an invalidate
# '02' + 16 zeros, a high-water mark '04'.  At one (t, i) string order is
# event < invalidate < high-water mark.
DOCDB_EVENT_TAIL = '01'
DOCDB_INVALIDATE_TAIL = '02'
DOCDB_HWM_TAIL = '04'
# 82 layout: a fragment of a split event is the whole event's token with
# '2A' + %04X fragment inserted before the final '04', so fragments sort
# after the whole-event token and before the next event.
FRAGMENT_MARK = '2A'

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
    20: 'IllegalOperation', 10334: 'BSONObjectTooLarge',
    40324: 'Location40324', 40415: 'Location40415',
    7182803: 'Location7182803',
    10107: 'NotWritablePrimary', 11600: 'InterruptedAtShutdown',
    11601: 'Interrupted', 11602: 'InterruptedDueToReplStateChange',
    13388: 'StaleConfig', 13435: 'NotPrimaryNoSecondaryOk',
    13436: 'NotPrimaryOrSecondary',
}
# errorLabels a real server attaches when a fault does not name any.
DEFAULT_LABELS = {280: ['NonResumableChangeStreamError'],
                  286: ['NonResumableChangeStreamError']}
DEFAULT_ERRMSG = {286: HISTORY_LOST_MSG, 136: CAPPED_LOST_MSG}

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


def capped_position_lost():
    """An open cursor fell off the oplog (MongoDB), or an expired resume
    point (DocumentDB): no labels."""
    return CommandError(136, CAPPED_LOST_MSG)


def too_large(size, token):
    return CommandError(
        10334, 'BSONObj size: %d (0x%X) is invalid. Size must be between 0 and '
               '16793600(16MB) First element: _id: { _data: "%s" }'
               % (size, size, token))


class BadRequest(Exception):
    """A control-API request we refuse (HTTP 400)."""


# --------------------------------------------------------------------------
# Resume tokens

LAYOUT_82, LAYOUT_01 = '82', '01'


def _prefix(t, i, layout=LAYOUT_82):
    if layout == LAYOUT_01:
        return '01%08x%08x' % (t, i)
    return '82%08X%08X' % (t, i)


def hwm_token(t, i, layout=LAYOUT_82):
    """High-water-mark token: "everything up to (t, i) has been seen"."""
    if layout == LAYOUT_01:
        return _prefix(t, i, layout) + DOCDB_HWM_TAIL
    return _prefix(t, i) + HWM_TAIL


def event_token(t, i, seq, invalidate=False, layout=LAYOUT_82, fragment=None):
    """Token of the change event at (t, i); sorts after hwm_token(t, i) in
    the 82 layout, before it in the 01 layout.  `fragment` (1-based) gives
    the token of one fragment of a split event (82 layout only)."""
    if layout == LAYOUT_01:
        tail = DOCDB_INVALIDATE_TAIL if invalidate else DOCDB_EVENT_TAIL
        return _prefix(t, i, layout) + tail + '%016x' % seq
    tail = INVALIDATE_TAIL if invalidate else EVENT_TAIL
    mark = '' if fragment is None else FRAGMENT_MARK + '%04X' % fragment
    return _prefix(t, i) + tail + '%016X' % seq + mark + '04'


def parse_token(token, layout=LAYOUT_82):
    """Return (t, i, sub, fragment) for a resume token document.

    Any well-formed token of the profile's layout is accepted (tests may
    build their own, in either case); sub says where within (t, i) the
    token sits, see SUB_*; fragment is k for fragment k of a split event,
    else None.
    """
    data = token.get('_data') if isinstance(token, dict) else None
    if not isinstance(data, str):
        raise CommandError(9, 'resume token must be a document with a string '
                              '_data field')
    try:
        bytes.fromhex(data)
    except ValueError:
        raise CommandError(9, 'resume token string was not a valid hex string')
    data = data.upper()
    if layout == LAYOUT_01:
        # DocumentDB: an undecodable token is 9 "Invalid resume token".
        if len(data) < 18 or data[:2] != '01':
            raise CommandError(9, 'Invalid resume token')
        t, i = int(data[2:10], 16), int(data[10:18], 16)
        tail = data[18:]
        if tail == '' or tail.startswith(DOCDB_HWM_TAIL):
            return t, i, SUB_HWM, None
        if tail.startswith(DOCDB_INVALIDATE_TAIL):
            return t, i, SUB_INVALIDATE, None
        return t, i, SUB_EVENT, None
    if len(data) < 18 or data[:2] != '82':
        raise CommandError(9, 'resume token does not start with a timestamp')
    t, i = int(data[2:10], 16), int(data[10:18], 16)
    tail = data[18:]
    if tail.startswith('2B0229'):
        return t, i, SUB_HWM, None
    if tail.startswith(INVALIDATE_TAIL[:14]):
        return t, i, SUB_INVALIDATE, None
    fragment = None
    rest = tail[len(EVENT_TAIL) + 16:] if tail.startswith(EVENT_TAIL) else ''
    if rest.startswith(FRAGMENT_MARK) and len(rest) >= 8:
        fragment = int(rest[2:6], 16)
    return t, i, SUB_EVENT, fragment


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
    """A change notification: insert, drop, or the invalidate after a drop.

    pads: padding strings for a large event (POST /events "size"): the first
    goes into fullDocument, a second into fullDocumentBeforeChange.
    """
    __slots__ = ('t', 'i', 'sub', 'kind', 'db', 'coll', 'seq', 'token',
                 'layout', 'pads', '_size', '_fragments')

    def __init__(self, t, i, kind, db, coll, seq, layout=LAYOUT_82, pads=()):
        self.t, self.i, self.kind = t, i, kind
        self.db, self.coll, self.seq = db, coll, seq
        self.layout, self.pads = layout, tuple(pads)
        self.sub = SUB_INVALIDATE if kind == 'invalidate' else SUB_EVENT
        self.token = event_token(t, i, seq, invalidate=kind == 'invalidate',
                                 layout=layout)
        self._size = None
        self._fragments = None

    @property
    def key(self):
        return (self.t, self.i, self.sub)

    def document(self):
        doc = {'_id': {'_data': self.token}, 'operationType': self.kind,
               'clusterTime': Timestamp(self.t, self.i)}
        if self.layout != LAYOUT_01:     # DocumentDB events have no wallTime
            doc['wallTime'] = wall_time(self.t)
        if self.kind != 'invalidate':
            doc['ns'] = {'db': self.db, 'coll': self.coll}
        if self.kind == 'insert':
            doc['documentKey'] = {'_id': self.seq}
            doc['fullDocument'] = {'_id': self.seq, 'seq': self.seq,
                                   'note': 'sim'}
            if self.pads:
                doc['fullDocument']['pad'] = self.pads[0]
            if len(self.pads) > 1:
                doc['fullDocumentBeforeChange'] = {'_id': self.seq,
                                                   'pad': self.pads[1]}
        return doc

    @property
    def size(self):
        """The event's BSON size in bytes."""
        if self._size is None:
            self._size = len(bson.encode(self.document()))
        return self._size

    def fragments(self):
        """The event as $changeStreamSplitLargeEvent sends it: documents of
        at most MAX_USER_BYTES, its top-level fields shared out in order.
        A single field too large for a fragment gives 10334, as on a real
        server."""
        if self._fragments is None:
            groups, current, used = [], [], 0
            budget = MAX_USER_BYTES - FRAGMENT_OVERHEAD
            for name, value in self.document().items():
                if name == '_id':
                    continue
                size = len(bson.encode({name: value})) - 5
                if size > budget:
                    raise too_large(self.size, self.token)
                if current and used + size > budget:
                    groups.append(current)
                    current, used = [], 0
                current.append((name, value))
                used += size
            groups.append(current)
            n = len(groups)
            frags = []
            for k, fields in enumerate(groups, 1):
                doc = {'_id': {'_data': event_token(self.t, self.i, self.seq,
                                                    layout=self.layout,
                                                    fragment=k)},
                       'splitEvent': {'fragment': k, 'of': n}}
                doc.update(fields)
                frags.append((doc, len(bson.encode(doc))))
            self._fragments = frags
        return self._fragments


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
    oplogs: the oplogs it reads (every shard's through mongos).  split: the
    pipeline ends with $changeStreamSplitLargeEvent.  frag_resume: (t, i, k)
    when fragment k of the event at (t, i) was the last one sent.
    """
    __slots__ = ('id', 'scope', 'pos', 'pbrt', 'closed', 'oplogs', 'split',
                 'frag_resume')

    def __init__(self, cursor_id, scope, pos, pbrt, oplogs, split=False):
        self.id, self.scope, self.pos, self.pbrt = cursor_id, scope, pos, pbrt
        self.closed = False
        self.oplogs, self.split = oplogs, split
        self.frag_resume = None


class Oplog:
    """One oplog: the replica set's, or one shard's.

    Keeps entries with t >= now - retention - history_extra (retention None:
    everything).  With truncate_markers N > 0 it is cut only in whole
    markers of (retention + history_extra) / N seconds, aligned to multiples
    of the marker size: a marker goes once all of it is older than the kept
    span, so the oldest entry jumps and stands still in between.
    """

    def __init__(self, name, retention, history_extra, markers):
        self.name = name
        self.retention = retention
        self.history_extra = history_extra
        self.markers = markers
        self.entries = collections.deque()   # oldest first
        self.events = []                     # change events, sorted by key
        self.truncated_through = None        # newest (t, i) ever removed
        self.down_until = 0.0                # mongos shards: POST /down
        self.port = None

    def keep_span(self):
        if self.retention is None:
            return None
        return self.retention + self.history_extra

    def marker_size(self):
        keep = self.keep_span()
        if not self.markers or not keep:
            return 0
        return keep / self.markers

    def cut(self, now):
        """Entries before this (t, i) go; None keeps everything."""
        keep = self.keep_span()
        if keep is None:
            return None
        edge = now - keep
        size = self.marker_size()
        if size:
            edge = math.floor(edge / size) * size
        return (math.ceil(edge), 0)

    def truncate_before(self, ts):
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

    def lost(self, ts):
        """Can a stream no longer start at `ts`?  As on a real server: yes if
        it is older than the oldest entry kept."""
        return ts < self.entries[0].ts

    def fell_off(self, pos):
        """Has an entry after pos been removed?"""
        return (self.truncated_through is not None
                and self.truncated_through > pos[:2])

    def has_entry(self, ts):
        return any(e.ts == ts for e in self.entries)

    def state(self):
        oldest = self.entries[0].ts if self.entries else None
        newest = self.entries[-1].ts if self.entries else None
        return {'name': self.name, 'port': self.port,
                'oldest': _tjson(oldest), 'newest': _tjson(newest),
                'window_seconds': newest[0] - oldest[0] if oldest else None,
                'entries': len(self.entries), 'retention': self.retention,
                'history_extra': self.history_extra,
                'truncate_markers': self.markers,
                'down': time.monotonic() < self.down_until}


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


def _pads(missing):
    """Padding for an event `missing` bytes short of its asked size: one
    string in fullDocument up to 16 MB, else two halves (the second goes to
    fullDocumentBeforeChange) so that $changeStreamSplitLargeEvent, which
    splits by top-level field, can split it."""
    if missing <= MAX_USER_BYTES - 1024:
        return ('x' * missing,)
    half = (missing + 1) // 2
    return ('x' * half, 'x' * half)


# --------------------------------------------------------------------------
# Simulator: the oplog, the clock, cursors, faults and the command log

class Simulator:
    """All simulated state, guarded by one lock.

    The wire front ends and the control API call the public methods;
    methods whose names start with '_' expect the lock to be held.  There is
    one oplog (a replica set) or one per shard (mongos), one clock and one
    increment counter for all.
    """

    def __init__(self, config):
        self.cfg = config
        self.profile = config['profile']
        self.operation_time = config['operation_time']
        self.layout = LAYOUT_01 if self.profile == 'documentdb' else LAYOUT_82
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

        if self.profile == 'mongos':
            self.oplogs = [Oplog(sh['name'], sh['retention'],
                                 sh['history_extra'], sh['truncate_markers'])
                           for sh in config['shards']]
        else:
            self.oplogs = [Oplog(config['set_name'], config['retention'],
                                 config['history_extra'],
                                 config['truncate_markers'])]
        self.by_name = {o.name: o for o in self.oplogs}

        self.last_ts = None                  # newest (t, i) ever allocated
        self.increment = 0                   # global, strictly increasing i
        self.next_seq = 1
        self.change_entries = 0              # non-noop entries ever appended

        self.cursors = {}
        self.faults = []
        self.down_until = 0.0
        self.log = []
        self._ticker = None

        self._prefill(start)
        self._next_background = start + self.every

    def oplog(self, name=None):
        """A shard's oplog by name (mongos), else the only one."""
        if name is None:
            return self.oplogs[0]
        if self.profile != 'mongos':
            raise BadRequest('"shard" is for the mongos profile only')
        if name not in self.by_name:
            raise BadRequest('no shard %r' % name)
        return self.by_name[name]

    def _targets(self, name):
        """The oplogs a control request acts on: the named shard, else all."""
        return [self.oplog(name)] if name is not None else list(self.oplogs)

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
                for oplog in self.oplogs:
                    self._append_noop(oplog, start - span + k * step)
                k += 1
        for _ in range(self.cfg['events']):
            self._append_insert(self.oplogs[0], start - 1,
                                *split_ns(self.default_ns))
        # What a primary writes when it takes office.  The oplog is never
        # empty, so a token taken from a fresh simulator stays resumable.
        for oplog in self.oplogs:
            self._append_noop(oplog, start, 'new primary')

    def _append_noop(self, oplog, t, msg='periodic noop'):
        t, i = self._allocate(t)
        oplog.entries.append(OplogEntry(t, i, 'n', '', {'msg': msg}))

    def _append_insert(self, oplog, t, db, coll, size=0):
        t, i = self._allocate(t)
        seq = self.next_seq
        self.next_seq += 1
        o = {'_id': seq, 'seq': seq, 'note': 'sim'}
        if size:
            o['size'] = size    # the padding lives in the event only
        oplog.entries.append(OplogEntry(t, i, 'i', '%s.%s' % (db, coll), o))
        self.change_entries += 1
        ev = ChangeEvent(t, i, 'insert', db, coll, seq, self.layout)
        if size and ev.size < size:
            ev = ChangeEvent(t, i, 'insert', db, coll, seq, self.layout,
                             _pads(size - ev.size))
        oplog.events.append(ev)
        return ev

    def _append_drop(self, oplog, db, coll):
        t, i = self._allocate(self._now())
        oplog.entries.append(OplogEntry(t, i, 'c', db + '.$cmd',
                                        {'drop': coll}))
        self.change_entries += 1
        drop = ChangeEvent(t, i, 'drop', db, coll, 0, self.layout)
        invalidate = ChangeEvent(t, i, 'invalidate', db, coll, 0, self.layout)
        oplog.events.extend([drop, invalidate])
        return drop, invalidate

    # ---- time passing ------------------------------------------------------

    def _catch_up(self):
        """Bring the oplogs up to the clock: background entries, retention."""
        now = self._now()
        if self.every > 0:
            # Entries every oplog's retention would remove at once are never
            # written, so a long clock jump stays cheap.
            cutoffs = []
            for oplog in self.oplogs:
                keep = oplog.keep_span()
                if keep is None:
                    break
                cutoffs.append(now - keep - oplog.marker_size() - 1)
            else:
                cutoff = min(cutoffs)
                if self._next_background < cutoff:
                    skip = math.ceil((cutoff - self._next_background)
                                     / self.every)
                    self._next_background += skip * self.every
            while self._next_background <= now:
                for oplog in self.oplogs:
                    self._append_noop(oplog, self._next_background)
                self._next_background += self.every
        for oplog in self.oplogs:
            cut = oplog.cut(now)
            if cut is not None:
                oplog.truncate_before(cut)

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

    def _lost_error(self):
        # DocumentDB reports an expired resume point as 136.
        if self.profile == 'documentdb':
            return capped_position_lost()
        return history_lost()

    def _not_found(self, oplogs, scope, t, i):
        """280: the token's (t, i) is an entry still kept, but no event of
        this stream's scope is there."""
        if not any(o.has_entry((t, i)) for o in oplogs):
            return False
        for oplog in oplogs:
            n = bisect.bisect_left(oplog.events, (t, i, -1), key=_event_key)
            for ev in oplog.events[n:]:
                if (ev.t, ev.i) != (t, i):
                    break
                if scope.matches(ev):
                    return False
        return True

    def open_change_stream(self, scope, spec, limit, oplogs, split=False):
        """Handle aggregate + $changeStream; returns the reply document."""
        if 'startAfter' in spec and self.profile == 'documentdb':
            raise CommandError(40415, "BSON field '$changeStream.startAfter' "
                                      "is an unknown field.")
        options = [k for k in ('resumeAfter', 'startAfter',
                               'startAtOperationTime') if k in spec]
        if len(options) > 1:
            raise CommandError(40674, 'Only one type of resume option is '
                                      'allowed, but multiple were found.')
        fragment = None
        with self.lock:
            self._catch_up()
            if options and options[0] != 'startAtOperationTime':
                option = options[0]
                t, i, sub, fragment = parse_token(spec[option], self.layout)
                if sub == SUB_INVALIDATE and option == 'resumeAfter':
                    raise CommandError(
                        260, "Attempting to resume a change stream using "
                             "'resumeAfter' is not allowed from an invalidate "
                             "notification.")
                start, pos, pbrt = (t, i), (t, i, sub), spec[option]['_data']
                if fragment is not None:
                    # Fragments after k of the event at (t, i) are still due.
                    pos = (t, i, SUB_EVENT - 1)
            elif options:
                at = spec['startAtOperationTime']
                if not isinstance(at, Timestamp):
                    raise CommandError(14, 'startAtOperationTime must be a '
                                           'timestamp')
                before = predecessor(at.time, at.inc)
                start, pos = (at.time, at.inc), before + (SUB_HWM,)
                pbrt = hwm_token(*before, layout=self.layout)
            else:
                now = self._cluster_ts()
                start, pos = now, now + (SUB_HWM,)
                pbrt = hwm_token(*now, layout=self.layout)
            # Through mongos: refused if any shard lacks the start.
            if any(o.lost(start) for o in oplogs):
                raise self._lost_error()
            if (options and options[0] != 'startAtOperationTime'
                    and sub == SUB_EVENT and self.profile != 'documentdb'
                    and self._not_found(oplogs, scope, t, i)):
                raise CommandError(280, NOT_FOUND_MSG + '{_data: "%s"}'
                                   % spec[options[0]]['_data'])
            cursor_id = self._new_cursor_id()
            cursor = Cursor(cursor_id, scope, pos, pbrt, oplogs, split)
            if fragment is not None:
                cursor.frag_resume = (t, i, fragment)
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
                if any(o.fell_off(cursor.pos) for o in cursor.oplogs):
                    # Not polled for longer than the retention, or a backlog
                    # truncated before it was read: the open cursor's scan
                    # lost its place (136; 286 is for a new aggregate).
                    self.cursors.pop(cursor_id, None)
                    raise capped_position_lost()
                try:
                    batch = self._scan(cursor, limit)
                except CommandError:    # 10334: the cursor dies with it
                    self.cursors.pop(cursor_id, None)
                    cursor.closed = True
                    raise
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

    @staticmethod
    def _events_after(cursor):
        """Every oplog's events after the cursor's position, in key order
        (one global increment makes the merge of shards a plain merge)."""
        def tail(oplog):
            events = oplog.events
            for k in range(bisect.bisect_right(events, cursor.pos,
                                               key=_event_key), len(events)):
                yield events[k]
        if len(cursor.oplogs) == 1:
            return tail(cursor.oplogs[0])
        return heapq.merge(*[tail(o) for o in cursor.oplogs], key=_event_key)

    def _scan(self, cursor, limit):
        """What the cursor would get next (does not move it): a list of
        (event, fragment) where fragment is None or (k, n, doc, size).
        A batch stops before a document that would take it past 16 MB; an
        event over the limit gives 10334 unless the stream splits it."""
        batch, used = [], 0
        if limit <= 0:
            return batch
        for ev in self._events_after(cursor):
            if not cursor.scope.matches(ev):
                continue
            if ev.size > MAX_EVENT_BYTES:
                if not cursor.split:
                    if batch:
                        break
                    raise too_large(ev.size, ev.token)
                frags = ev.fragments()
                first = 0
                if cursor.frag_resume and cursor.frag_resume[:2] == (ev.t, ev.i):
                    first = cursor.frag_resume[2]
                for k in range(first, len(frags)):
                    doc, size = frags[k]
                    if batch and used + size > MAX_USER_BYTES:
                        return batch
                    batch.append((ev, (k + 1, len(frags), doc, size)))
                    used += size
                    if len(batch) >= limit:
                        return batch
                continue
            if batch and used + ev.size > MAX_USER_BYTES:
                break
            batch.append((ev, None))
            used += ev.size
            if ev.kind == 'invalidate' or len(batch) >= limit:
                break
        return batch

    def _commit(self, cursor, batch, limit):
        """Move the cursor past a batch; an empty batch moves it (and its
        postBatchResumeToken) to the newest oplog entry."""
        if batch:
            last, frag = batch[-1]
            if frag is not None and frag[0] < frag[1]:
                # Inside a split event: its later fragments are still due.
                cursor.pos = (last.t, last.i, SUB_EVENT - 1)
                cursor.frag_resume = (last.t, last.i, frag[0])
                cursor.pbrt = frag[2]['_id']['_data']
                return
            cursor.frag_resume = None
            cursor.pos = last.key
            cursor.pbrt = frag[2]['_id']['_data'] if frag else last.token
            if last.kind == 'invalidate':
                cursor.closed = True
        elif limit > 0 and self.last_ts and self.last_ts > cursor.pos[:2]:
            newest = self.last_ts
            cursor.frag_resume = None
            cursor.pos = newest + (SUB_HWM,)
            cursor.pbrt = hwm_token(*newest, layout=self.layout)

    def _cursor_reply(self, cursor, batch, field):
        docs = [frag[2] if frag else ev.document() for ev, frag in batch]
        return {'cursor': {'id': Int64(0 if cursor.closed else cursor.id),
                           'ns': cursor.scope.reply_ns,
                           field: docs,
                           'postBatchResumeToken': {'_data': cursor.pbrt}},
                'operationTime': Timestamp(*self._cluster_ts()),
                'ok': 1}

    def cluster_time(self):
        with self.lock:
            return Timestamp(*self._cluster_ts())

    # ---- oplog queries -----------------------------------------------------

    def oplog_find(self, oplog, query, direction, limit, projection):
        with self.lock:
            self._catch_up()
            entries = reversed(oplog.entries) if direction < 0 else oplog.entries
            docs = []
            for entry in entries:
                if len(docs) >= limit:
                    break
                doc = entry.document()
                if not query or matches_query(doc, query):
                    docs.append(project(doc, projection))
            return docs, Timestamp(*self._cluster_ts())

    # ---- documents outside the oplog (POST /documents) ------------------------

    def put_documents(self, db, coll, docs):
        with self.lock:
            store = self.__dict__.setdefault('documents', {})
            store[(db, coll)] = list(docs)
            return len(docs)

    def find_documents(self, db, coll, query, limit):
        with self.lock:
            docs = self.__dict__.get('documents', {}).get((db, coll), [])
            return [d for d in docs if matches_query(d, query)][:limit]

    # ---- control operations ------------------------------------------------

    def append_events(self, count, ns, shard=None, size=0):
        db, coll = split_ns(ns)
        oplog = self.oplog(shard)
        with self.lock:
            self._catch_up()
            now = self._now()
            appended = [self._append_insert(oplog, now, db, coll, size)
                        for _ in range(count)]
            self.changed.notify_all()
        first, last = appended[0], appended[-1]
        return {'first_seq': first.seq, 'last_seq': last.seq,
                'last_token': {'_data': last.token},
                'last_time': _tjson((last.t, last.i))}

    def invalidate(self, ns, shard=None):
        db, coll = split_ns(ns)
        oplog = self.oplog(shard)
        with self.lock:
            self._catch_up()
            drop, invalidate = self._append_drop(oplog, db, coll)
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

    def set_retention(self, seconds, shard=None):
        targets = self._targets(shard)
        with self.lock:
            for oplog in targets:
                oplog.retention = seconds
            if shard is None:
                self.retention = seconds
            self._catch_up()
        return self.state()

    def truncate(self, before, shard=None):
        targets = self._targets(shard)
        with self.lock:
            self._catch_up()
            removed = sum(o.truncate_before(before) for o in targets)
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

    def set_down(self, seconds, shard=None):
        with self.lock:
            until = time.monotonic() + seconds
            if shard is None:
                self.down_until = until
            else:
                self.oplog(shard).down_until = until

    def is_down(self, oplog=None):
        until = oplog.down_until if oplog is not None else self.down_until
        return time.monotonic() < until

    def state(self):
        with self.lock:
            self._catch_up()
            now = self._now()
            if len(self.oplogs) == 1:
                oldest = self.oplogs[0].entries[0].ts
                newest = self.oplogs[0].entries[-1].ts
            else:
                # Through mongos: the oldest start every shard still has.
                oldest = max(o.entries[0].ts for o in self.oplogs)
                newest = max(o.entries[-1].ts for o in self.oplogs)
            state = {
                'profile': self.profile,
                'now': {'t': int(now), 'i': self.increment},
                'oldest': _tjson(oldest), 'newest': _tjson(newest),
                'window_seconds': newest[0] - oldest[0],
                'entries': sum(len(o.entries) for o in self.oplogs),
                'events': self.change_entries,
                'last_seq': self.next_seq - 1,
                'cursors': len(self.cursors),
                'rate': self._rate,
                'retention': self.retention,
                'faults': [f.describe() for f in self.faults],
                'down': self.is_down(),
            }
            if self.profile == 'mongos':
                state['shards'] = [o.state() for o in self.oplogs]
            return state

    # ---- command log -------------------------------------------------------

    def record(self, name, db, collection, doc, server=None):
        """Append a received command to the log; returns the entry so the
        caller can add the outcome.  A shard's commands name it in
        `server`."""
        with self.lock:
            entry = {'n': len(self.log) + 1, 'command': name, 'db': db,
                     'collection': collection, 'doc': doc,
                     'time': time.time(), 'fault': None, 'reply': None}
            if server:
                entry['server'] = server
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

    shard: None for the server the URI names (the replica set's primary, or
    the mongos router); an Oplog for one shard's primary (mongos profile),
    reached directly on its own port.
    """

    def __init__(self, sim, shard=None):
        self.sim = sim
        self.shard = shard
        self.router = sim.profile == 'mongos' and shard is None
        self.mock = mockupdb.MockupDB(port=0, auto_ismaster=False,
                                      request_timeout=1e6)
        self.port = None
        self.handlers = {
            'hello': self._hello, 'ismaster': self._hello,
            'ping': self._ping, 'endsessions': self._ok,
            'buildinfo': self._build_info,
            'aggregate': self._aggregate, 'getmore': self._get_more,
            'killcursors': self._kill_cursors, 'find': self._find,
        }
        if self.router:
            self.handlers['listshards'] = self._list_shards

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
            entry = self.sim.record(name, request.namespace, collection, doc,
                                    self.shard.name if self.shard else None)
            threading.Thread(target=self._serve, args=(request, name, entry),
                             daemon=True).start()
        except Exception:
            warn('error receiving request:\n' + traceback.format_exc())
        return True

    def _serve(self, request, name, entry):
        try:
            if self.sim.is_down(self.shard):
                entry['fault'] = 'down'
                request.hangup()
                return
            # Faults are for the server the URI names, not for shards.
            fault = None if self.shard else self.sim.take_fault(name)
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
        if self.router:
            # A mongos: msg isdbgrid, no setName, no hosts.
            identity = {'msg': 'isdbgrid'}
        else:
            set_name = self.shard.name if self.shard else self.sim.cfg['set_name']
            identity = {'setName': set_name, 'hosts': [host],
                        'primary': host, 'me': host}
        reply = {'ismaster': True, 'isWritablePrimary': True}
        reply.update(identity)
        reply.update({'maxBsonObjectSize': 16 * 1024 * 1024,
                 'maxMessageSizeBytes': 48000000,
                 'maxWriteBatchSize': 100000,
                 'localTime': datetime.datetime.now(datetime.timezone.utc),
                 'logicalSessionTimeoutMinutes': 30,
                 'minWireVersion': 0,
                 'maxWireVersion': self.sim.cfg['max_wire_version'],
                 'readOnly': False, 'ok': 1})
        if request.doc.get('helloOk'):
            reply['helloOk'] = True
        return reply

    @staticmethod
    def _ok(request):
        return {'ok': 1}

    def _ping(self, request):
        # A replica set member or a router reports the cluster time in
        # every reply; operation_time false stands for a server that does
        # not (the client then falls back to its own clock).
        if not self.sim.operation_time:
            return {'ok': 1}
        return {'ok': 1, 'operationTime': self.sim.cluster_time()}

    def _list_shards(self, request):
        if request.namespace != 'admin':
            raise CommandError(13, 'listShards may only be run against the '
                                   'admin database.')
        return {'shards': [{'_id': o.name,
                            'host': '%s/localhost:%d' % (o.name, o.port),
                            'state': 1} for o in self.sim.oplogs],
                'ok': 1}

    def _unknown(self, request):
        note('unknown command %r answered ok:1' % request.command_name)
        return {'ok': 1}

    def _build_info(self, request):
        version = SERVER_VERSIONS.get(self.sim.cfg['max_wire_version'], '6.0.11')
        if self.sim.profile == 'documentdb':
            version = '5.0.0'

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
        split = self._split_stage(pipeline)
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
        oplogs = [self.shard] if self.shard else self.sim.oplogs
        return self.sim.open_change_stream(scope, spec, limit, oplogs, split)

    def _split_stage(self, pipeline):
        """Whether the pipeline ends with $changeStreamSplitLargeEvent."""
        where = [k for k, stage in enumerate(pipeline)
                 if isinstance(stage, dict) and SPLIT_STAGE in stage]
        if not where:
            return False
        if self.sim.profile == 'documentdb':
            raise CommandError(40324, "Unrecognized pipeline stage name: '%s'"
                               % SPLIT_STAGE)
        if where != [len(pipeline) - 1]:
            raise CommandError(7182803, '%s must be the last stage in the '
                                        'pipeline' % SPLIT_STAGE)
        return True

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
        if db == 'local' and self.router:
            raise CommandError(20, "Can't use 'local' database through mongos")
        if db == 'local' and self.sim.profile == 'documentdb':
            raise CommandError(13, 'not authorized on local to execute command '
                                   '{ find: "%s" }' % coll)
        if (db, coll) != ('local', 'oplog.rs'):
            limit = abs(int(doc.get('limit') or 0)) or 101
            docs = self.sim.find_documents(db, coll, doc.get('filter') or {}, limit)
            return {'cursor': {'id': Int64(0), 'ns': ns, 'firstBatch': docs}, 'ok': 1}
        direction = 1
        sort = doc.get('sort') or {}
        if sort:
            key, value = next(iter(sort.items()))
            if key in ('$natural', 'ts') and value < 0:
                direction = -1
        limit = abs(int(doc.get('limit') or 0))
        batch = int(doc.get('batchSize') or 0)
        count = min(x for x in (limit, batch, 101) if x > 0)
        docs, op_time = self.sim.oplog_find(self.shard or self.sim.oplogs[0],
                                            doc.get('filter') or {}, direction,
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
    size = _number(body, 'size', 0, int, minimum=0)
    if size > 64 * 1024 * 1024:
        raise BadRequest('size is at most 64 MiB')
    return sim.append_events(count, body.get('ns') or sim.default_ns,
                             _shard_arg(body), size)


def _shard_arg(body):
    shard = body.get('shard')
    if shard is not None and not isinstance(shard, str):
        raise BadRequest('shard must be a shard name')
    return shard


def _route_invalidate(sim, body, query):
    return sim.invalidate(body.get('ns') or sim.default_ns, _shard_arg(body))


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
    return sim.set_retention(seconds, _shard_arg(body))


def _route_truncate(sim, body, query):
    return sim.truncate(_time_arg(body.get('before'), 'before'),
                        _shard_arg(body))


def _route_fault(sim, body, query):
    return {'pending': sim.add_fault(Fault(body))}


def _route_clear_faults(sim, body, query):
    return {'cleared': sim.clear_faults()}


def _route_down(sim, body, query):
    seconds = _number(body, 'seconds', 5, float, minimum=0)
    shard = _shard_arg(body)
    if shard is not None:
        sim.oplog(shard)    # a bad name is a 400
    sim.set_down(seconds, shard)
    return {'down_for': seconds}


def _route_documents(sim, body, query):
    db, coll, docs = body.get('db'), body.get('coll'), body.get('docs')
    if not isinstance(db, str) or not isinstance(coll, str) or not isinstance(docs, list):
        raise BadRequest('give {"db": D, "coll": C, "docs": [extended JSON documents]}')
    return {'stored': sim.put_documents(db, coll, json_util.loads(json.dumps(docs)))}


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
    ('POST', '/documents'): _route_documents,
    ('POST', '/stop'): _route_stop,
}


# --------------------------------------------------------------------------
# Startup

def load_scenario(path):
    """Scenario JSON merged over DEFAULTS; unknown keys are typos, so they are
    refused (keys starting with '_' and "description" are comments)."""
    config = dict(DEFAULTS)
    scenario = {}
    if path:
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
    if config['profile'] not in PROFILES:
        raise BadRequest('profile must be one of %s' % (PROFILES,))
    if config['max_wire_version'] is None:
        config['max_wire_version'] = 13 if config['profile'] == 'documentdb' else 17
    ints = ('max_wire_version', 'start_time', 'events', 'batch_size',
            'truncate_markers')
    for key in ints:
        config[key] = _number(config, key, None, int, minimum=0)
    for key in ('rate', 'background_every', 'initial_oplog_span', 'await_ms',
                'history_extra'):
        config[key] = _number(config, key, None, float, minimum=0)
    if config['retention'] is not None:
        config['retention'] = _number(config, 'retention', None, float, minimum=0)
    if not isinstance(config['operation_time'], bool):
        raise BadRequest('operation_time must be true or false')
    config['shards'] = _load_shards(config)
    if config['batch_size'] < 1:
        raise BadRequest('batch_size must be >= 1')
    if config['initial_oplog_span'] > config['start_time']:
        raise BadRequest('initial_oplog_span reaches before time 0')
    if not isinstance(config['set_name'], str) or not config['set_name']:
        raise BadRequest('set_name must be a non-empty string')
    split_ns(config['namespace'])
    return config


SHARD_KEYS = ('name', 'retention', 'history_extra', 'truncate_markers')


def _load_shards(config):
    """mongos: the shards, each with its own retention and truncation (the
    top-level keys are the defaults); two shards unless listed."""
    shards = config['shards']
    if config['profile'] != 'mongos':
        if shards is not None:
            raise BadRequest('shards is for the mongos profile only')
        return None
    if shards is None:
        shards = [{'name': 'shard0'}, {'name': 'shard1'}]
    if not isinstance(shards, list) or not shards:
        raise BadRequest('shards must be a non-empty list')
    out, names = [], set()
    for spec in shards:
        if not isinstance(spec, dict):
            raise BadRequest('each shard must be an object')
        for key in spec:
            if key not in SHARD_KEYS:
                raise BadRequest('unknown shard key %r' % key)
        name = spec.get('name')
        if not isinstance(name, str) or not name or name in names:
            raise BadRequest('each shard needs a unique name')
        names.add(name)
        shard = {'name': name,
                 'retention': spec.get('retention', config['retention']),
                 'history_extra': _number(spec, 'history_extra',
                                          config['history_extra'], float,
                                          minimum=0),
                 'truncate_markers': _number(spec, 'truncate_markers',
                                             config['truncate_markers'], int,
                                             minimum=0)}
        if shard['retention'] is not None:
            shard['retention'] = _number(shard, 'retention', None, float,
                                         minimum=0)
        out.append(shard)
    return out


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
    shard_wires = []
    info_shards = []
    if sim.profile == 'mongos':
        uri = 'mongodb://localhost:%d/' % mongo_port
        for oplog in sim.oplogs:
            shard_wire = WireFrontend(sim, oplog)
            oplog.port = shard_wire.start()
            shard_wires.append(shard_wire)
            info_shards.append({'name': oplog.name, 'port': oplog.port,
                                'uri': 'mongodb://localhost:%d/?replicaSet=%s'
                                       % (oplog.port, oplog.name)})
    else:
        uri = 'mongodb://localhost:%d/?replicaSet=%s' % (mongo_port,
                                                          config['set_name'])
    control = ControlServer(sim, stop)
    control_port = control.start()
    sim.start_ticker()
    info = {'mongo_port': mongo_port, 'control_port': control_port,
            'pid': os.getpid(), 'uri': uri}
    if sim.profile == 'mongos':
        info['shards'] = info_shards
    write_port_file(args.port_file, info)
    warn('%s (%s) control http://127.0.0.1:%d'
         % (uri, sim.profile, control_port))

    while not stop.wait(0.5):
        pass

    sim.shutdown()
    control.shutdown()
    control.server_close()
    # Stop every server at once: each stop may take up to 0.3 s.
    stoppers = [threading.Thread(target=w.stop, daemon=True)
                for w in [wire] + shard_wires]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join(0.5)
    return 0


if __name__ == '__main__':
    sys.exit(main())
