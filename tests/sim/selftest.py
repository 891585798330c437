#!/usr/bin/python3
"""Self-check for mongosim, driven through pymongo and the control API.

Why: every integration test of tokenwatch trusts the simulator, so the
simulator's own behaviour (replica-set identity, change-stream semantics,
oplog window, clock, faults, shutdown) is checked here first.  Each test
starts its own simulator process on free ports and stops it by pid.

Usage: /usr/bin/python3 tests/sim/selftest.py [-v] [TEST_NAME_SUBSTRING ...]
Exit status: 0 if every selected test passed, 1 otherwise.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

from bson import Int64, Timestamp
import pymongo
from pymongo.errors import AutoReconnect, OperationFailure

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, 'mongosim.py')
VERBOSE = False
EVENT_TAIL = '2B022C0100296E5A1004'
HWM_TAIL = '2B0229296E04'


# --------------------------------------------------------------------------
# Harness

class Sim:
    """One simulator process, its ports, and helpers to talk to it."""

    def __init__(self, scenario=None):
        self.dir = tempfile.mkdtemp(prefix='mongosim-selftest-')
        self.port_file = os.path.join(self.dir, 'ports.json')
        args = ['/usr/bin/python3', SIM, '--port-file', self.port_file]
        if scenario is not None:
            path = os.path.join(self.dir, 'scenario.json')
            with open(path, 'w') as f:
                json.dump(scenario, f)
            args += ['--scenario', path]
        if VERBOSE:
            args.append('--verbose')
        self.proc = subprocess.Popen(args, stderr=None if VERBOSE else subprocess.DEVNULL)
        deadline = time.time() + 10
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError('simulator did not start (rc=%s)' % self.proc.poll())
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.ports = json.load(f)
        self.uri = 'mongodb://localhost:%d/?replicaSet=rs0' % self.ports['mongo_port']
        self.clients = []

    def client(self, **kwargs):
        kwargs.setdefault('serverSelectionTimeoutMS', 5000)
        client = pymongo.MongoClient(self.uri, **kwargs)
        self.clients.append(client)
        return client

    def call(self, method, path, body=None, raw=None, expect=200):
        data = raw if raw is not None else (
            None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(
            'http://127.0.0.1:%d%s' % (self.ports['control_port'], path),
            data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        result = json.loads(payload)
        check(status == expect, '%s %s: HTTP %d, expected %d: %s'
              % (method, path, status, expect, result))
        return result

    def state(self):
        return self.call('GET', '/state')

    def log(self, since=0, all=False):
        return self.call('GET', '/log?since=%d%s' % (since, '&all=1' if all else ''))

    def stop(self, how='term'):
        """Stop the process; returns (exit code, seconds it took)."""
        for client in self.clients:
            client.close()
        start = time.time()
        if self.proc.poll() is None:
            if how == 'http':
                self.call('POST', '/stop')
            else:
                self.proc.send_signal(signal.SIGINT if how == 'int' else signal.SIGTERM)
        try:
            rc = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        took = time.time() - start
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc, took


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def eq(actual, expected, what):
    check(actual == expected, '%s: got %r, expected %r' % (what, actual, expected))


def raises(fn, code=None, exc=OperationFailure):
    try:
        fn()
    except exc as err:
        if code is not None:
            eq(err.code, code, 'error code')
        return err
    raise AssertionError('expected %s%s' % (exc.__name__, ' code %s' % code if code else ''))


def token_ts(token):
    data = token['_data']
    return int(data[2:10], 16), int(data[10:18], 16)


def seqs(batch):
    return [d['fullDocument']['seq'] for d in batch if d['operationType'] == 'insert']


def open_stream(db, coll_or_1, spec=None, **kw):
    return db.command('aggregate', coll_or_1,
                      pipeline=[{'$changeStream': spec or {}}], cursor=kw.pop('cursor', {}), **kw)


def get_more(db, cursor_id, collection, **kw):
    return db.command('getMore', Int64(cursor_id), collection=collection, **kw)


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# --------------------------------------------------------------------------
# Tests

@test
def identity_and_basic_commands():
    sim = Sim()
    try:
        eq(sorted(sim.ports), ['control_port', 'mongo_port', 'pid', 'uri'], 'port file keys')
        eq(sim.ports['uri'], sim.uri, 'uri in port file')
        eq(sim.ports['pid'], sim.proc.pid, 'pid in port file')
        client = sim.client()
        port = sim.ports['mongo_port']
        host = 'localhost:%d' % port
        for name in ('isMaster', 'ismaster', 'hello'):
            hello = client.admin.command(name)
            for key, value in (('ismaster', True), ('isWritablePrimary', True),
                               ('setName', 'rs0'), ('hosts', [host]),
                               ('primary', host), ('me', host), ('minWireVersion', 0),
                               ('maxWireVersion', 17), ('logicalSessionTimeoutMinutes', 30)):
                eq(hello.get(key), value, '%s.%s' % (name, key))
        eq(client.admin.command('ping')['ok'], 1.0, 'ping')
        eq(client.admin.command('buildInfo')['version'][:3], '6.0', 'buildInfo version')
        eq(client.shop.command('someUnknownCommand', 1)['ok'], 1.0, 'unknown command')
        client.close()   # sends endSessions
        time.sleep(0.2)
        log = sim.log()
        names = [e['command'] for e in log]
        check('someUnknownCommand' in names, 'unknown command logged: %s' % names)
        check('endSessions' in names, 'endSessions logged and answered: %s' % names)
        check(not {'isMaster', 'ismaster', 'hello', 'ping'} & set(names),
              'handshake/ping hidden from default log: %s' % names)
        everything = [e['command'] for e in sim.log(all=True)]
        check({'isMaster', 'hello', 'ping'} <= set(everything), 'all=1 shows them')
        end = [e for e in log if e['command'] == 'endSessions'][0]
        eq(end['reply'], {'ok': 1}, 'endSessions reply')
        eq(end['db'], 'admin', 'endSessions db')
    finally:
        sim.stop()


@test
def oplog_window_queries():
    sim = Sim({'initial_oplog_span': 3600, 'events': 3, 'background_every': 10})
    try:
        client = sim.client()
        oplog = client.local['oplog.rs']
        state = sim.state()
        first = list(oplog.find().sort('$natural', 1).limit(1))
        last = list(oplog.find().sort('$natural', -1).limit(1))
        eq(len(first), 1, 'oldest entry returned')
        eq((first[0]['ts'].time, first[0]['ts'].inc),
           (state['oldest']['t'], state['oldest']['i']), 'oldest ts')
        eq(first[0]['ts'].time, 1700000000 - 3600, 'window starts at start_time - span')
        eq(int(first[0]['wall'].timestamp()), first[0]['ts'].time, 'wall matches ts')
        for key in ('ts', 't', 'h', 'v', 'op', 'ns', 'wall', 'o'):
            check(key in first[0], 'oplog entry has %s' % key)
        check(last[0]['ts'] >= Timestamp(state['newest']['t'], state['newest']['i']),
              'newest ts')
        natural = list(oplog.find().limit(1))
        eq(natural[0]['ts'], first[0]['ts'], 'no sort = natural order')
        inserts = list(oplog.find({'op': 'i'}).sort('$natural', -1).limit(1))
        eq(inserts[0]['o']['seq'], 3, 'filter on op')
        proj = list(oplog.find({}, {'ts': 1}).sort('$natural', -1).limit(1))
        eq(sorted(proj[0]), ['ts'], 'projection')
        since = list(oplog.find({'ts': {'$gte': Timestamp(1700000000 - 1, 0)}}).limit(10))
        check(all(d['ts'].time >= 1699999999 for d in since) and since, 'ts $gte filter')
        find = [e for e in sim.log() if e['command'] == 'find'][0]
        eq(find['doc']['sort'], {'$natural': 1}, 'logged sort')
        eq(find['collection'], 'oplog.rs', 'logged collection')
        eq(list(client.shop.orders.find()), [], 'find elsewhere is empty')
    finally:
        sim.stop()


@test
def collection_stream_delivers_new_events():
    sim = Sim({'events': 5, 'background_every': 0})
    try:
        db = sim.client().shop
        reply = open_stream(db, 'orders')
        cursor = reply['cursor']
        eq(cursor['firstBatch'], [], 'stream starts after the newest entry')
        eq(cursor['ns'], 'shop.orders', 'cursor ns')
        check(cursor['id'] != 0, 'cursor id nonzero')
        check(isinstance(reply['operationTime'], Timestamp), 'operationTime')
        posted = sim.call('POST', '/events', {'count': 3})
        sim.call('POST', '/events', {'count': 2, 'ns': 'shop.other'})
        eq((posted['first_seq'], posted['last_seq']), (6, 8), 'seq numbers continue')
        more = get_more(db, cursor['id'], 'orders', maxTimeMS=200)['cursor']
        batch = more['nextBatch']
        eq(seqs(batch), [6, 7, 8], 'events delivered, other collection filtered')
        ev = batch[-1]
        eq(ev['operationType'], 'insert', 'operationType')
        eq(ev['ns'], {'db': 'shop', 'coll': 'orders'}, 'ns')
        eq(ev['documentKey'], {'_id': 8}, 'documentKey')
        eq(ev['fullDocument'], {'_id': 8, 'seq': 8, 'note': 'sim'}, 'fullDocument')
        eq(ev['_id'], posted['last_token'], 'token returned by POST /events')
        data = ev['_id']['_data']
        eq(data, data.upper(), 'uppercase hex')
        eq(data[:2], '82', 'type byte')
        eq(token_ts(ev['_id']), (ev['clusterTime'].time, ev['clusterTime'].inc),
           'token encodes clusterTime')
        eq(data[18:], EVENT_TAIL + '%016X' % 8 + '04', 'event token tail')
        tokens = [d['_id']['_data'] for d in batch]
        eq(tokens, sorted(tokens), 'tokens sort in time order')
        eq(more['postBatchResumeToken'], ev['_id'], 'PBRT = last event of batch')
        check(ev['wallTime'] is not None, 'wallTime')
        eq(sim.state()['last_seq'], 10, 'state last_seq')
    finally:
        sim.stop()


@test
def start_options_and_their_log():
    sim = Sim({'events': 5, 'background_every': 0})
    try:
        db = sim.client().shop
        first = db.command('aggregate', 'orders', pipeline=[{'$changeStream': {
            'startAtOperationTime': Timestamp(1699999999, 2)}}], cursor={})['cursor']
        eq(seqs(first['firstBatch']), [2, 3, 4, 5], 'startAtOperationTime is inclusive')
        token3 = first['firstBatch'][1]['_id']
        after = open_stream(db, 'orders', {'resumeAfter': token3})['cursor']
        eq(seqs(after['firstBatch']), [4, 5], 'resumeAfter is exclusive')
        start = open_stream(db, 'orders', {'startAfter': token3})['cursor']
        eq(seqs(start['firstBatch']), [4, 5], 'startAfter is exclusive')
        eq(after['postBatchResumeToken']['_data'][18:18 + len(EVENT_TAIL)], EVENT_TAIL,
           'PBRT of non-empty batch is an event token')
        # A token we did not issue, built from a time: resumes after (t, i).
        built = {'_data': '82%08X%08X' % (1699999999, 4) + HWM_TAIL}
        eq(seqs(open_stream(db, 'orders', {'resumeAfter': built})['cursor']['firstBatch']),
           [5], 'hand-built token')
        raises(lambda: open_stream(db, 'orders', {'resumeAfter': token3,
                                                 'startAfter': token3}), 40674)
        raises(lambda: open_stream(db, 'orders', {'resumeAfter': {'_data': 'zz'}}), 9)
        # Batch limit from cursor.batchSize, and batchSize 0 = empty first batch.
        two = open_stream(db, 'orders', {'startAtOperationTime': Timestamp(1699999999, 1)},
                          cursor={'batchSize': 2})['cursor']
        eq(seqs(two['firstBatch']), [1, 2], 'cursor.batchSize honoured')
        zero = open_stream(db, 'orders', {'startAtOperationTime': Timestamp(1699999999, 1)},
                           cursor={'batchSize': 0})['cursor']
        eq(zero['firstBatch'], [], 'batchSize 0')
        rest = get_more(db, zero['id'], 'orders', maxTimeMS=10)['cursor']['nextBatch']
        eq(seqs(rest), [1, 2, 3, 4, 5], 'getMore after batchSize 0')
        # The log tells a test which option and which value the client sent.
        aggs = [e for e in sim.log() if e['command'] == 'aggregate']
        spec0 = aggs[0]['doc']['pipeline'][0]['$changeStream']
        eq(spec0, {'startAtOperationTime': {'$timestamp': {'t': 1699999999, 'i': 2}}},
           'logged startAtOperationTime')
        eq(aggs[1]['doc']['pipeline'][0]['$changeStream'], {'resumeAfter': token3},
           'logged resumeAfter')
        eq(aggs[2]['doc']['pipeline'][0]['$changeStream'], {'startAfter': token3},
           'logged startAfter')
        eq((aggs[0]['db'], aggs[0]['collection']), ('shop', 'orders'), 'logged db/collection')
        eq(aggs[0]['reply']['seqs'], [2, 3, 4, 5], 'logged reply summary')
        # Extra pipeline stages are accepted (and logged).
        reply = db.command('aggregate', 'orders', pipeline=[
            {'$changeStream': {'fullDocument': 'updateLookup'}},
            {'$match': {'operationType': 'insert'}}], cursor={})
        eq(reply['ok'], 1.0, 'extra stages accepted')
        last = [e for e in sim.log() if e['command'] == 'aggregate'][-1]
        eq(last['doc']['pipeline'][1], {'$match': {'operationType': 'insert'}}, 'stage logged')
        # pymongo's high-level API end to end.
        with db.orders.watch(start_at_operation_time=Timestamp(1699999999, 1),
                             max_await_time_ms=100) as stream:
            got = [stream.try_next()['fullDocument']['seq'] for _ in range(5)]
        eq(got, [1, 2, 3, 4, 5], 'pymongo watch()')
    finally:
        sim.stop()


@test
def database_and_cluster_scopes():
    sim = Sim({'background_every': 0})
    try:
        client = sim.client()
        dbs = open_stream(client.shop, 1)['cursor']
        eq(dbs['ns'], 'shop.$cmd.aggregate', 'db stream ns')
        cluster = client.admin.command('aggregate', 1, pipeline=[
            {'$changeStream': {'allChangesForCluster': True}}], cursor={})['cursor']
        eq(cluster['ns'], 'admin.$cmd.aggregate', 'cluster stream ns')
        for ns in ('shop.orders', 'shop.other', 'crm.people'):
            sim.call('POST', '/events', {'ns': ns})
        got_db = get_more(client.shop, dbs['id'], '$cmd.aggregate', maxTimeMS=100)
        got_all = get_more(client.admin, cluster['id'], '$cmd.aggregate', maxTimeMS=100)
        eq([d['ns']['coll'] for d in got_db['cursor']['nextBatch']], ['orders', 'other'],
           'db stream scope')
        eq([d['ns']['db'] for d in got_all['cursor']['nextBatch']], ['shop', 'shop', 'crm'],
           'cluster stream scope')
        with client.watch(max_await_time_ms=100,
                          start_at_operation_time=Timestamp(1700000000, 1)) as stream:
            eq(stream.try_next()['fullDocument']['seq'], 1, 'pymongo client.watch()')
        raises(lambda: open_stream(client.admin, 1), 73)
    finally:
        sim.stop()


@test
def postbatchresumetoken_on_empty_batches():
    sim = Sim({'background_every': 10})
    try:
        db = sim.client().shop
        cursor = open_stream(db, 'orders')['cursor']
        pbrt0 = cursor['postBatchResumeToken']
        eq(pbrt0['_data'][18:], HWM_TAIL, 'HWM token tail')
        sim.call('POST', '/clock', {'advance': 60})
        empty = get_more(db, cursor['id'], 'orders', maxTimeMS=50)['cursor']
        eq(empty['nextBatch'], [], 'quiet stream')
        pbrt1 = empty['postBatchResumeToken']
        newest = sim.state()['newest']
        eq(token_ts(pbrt1), (newest['t'], newest['i']), 'PBRT = newest oplog entry')
        check(pbrt1['_data'] > pbrt0['_data'], 'PBRT advanced on an empty batch')
        check(token_ts(pbrt1)[0] - token_ts(pbrt0)[0] >= 60, 'by the simulated minute')
        # After an event that is the newest entry, an empty batch keeps the
        # event token (the PBRT never moves backwards).
        sim.call('POST', '/clock', {'rate': 0})
        posted = sim.call('POST', '/events', {})
        got = get_more(db, cursor['id'], 'orders', maxTimeMS=50)['cursor']
        eq(got['postBatchResumeToken'], posted['last_token'], 'PBRT after event')
        again = get_more(db, cursor['id'], 'orders', maxTimeMS=50)['cursor']
        eq(again['postBatchResumeToken'], posted['last_token'], 'PBRT does not regress')
        hwm = {'_data': '82%08X%08X' % token_ts(posted['last_token']) + HWM_TAIL}
        check(posted['last_token']['_data'] > hwm['_data'],
              'event token sorts after the HWM token of the same time')
    finally:
        sim.stop()


@test
def batch_sizes():
    sim = Sim({'batch_size': 5, 'background_every': 0})
    try:
        db = sim.client().shop
        cursor = open_stream(db, 'orders')['cursor']
        sim.call('POST', '/events', {'count': 12})
        sizes = [len(get_more(db, cursor['id'], 'orders', maxTimeMS=50)['cursor']['nextBatch'])
                 for _ in range(4)]
        eq(sizes, [5, 5, 2, 0], 'scenario batch_size')
        sim.call('POST', '/events', {'count': 4})
        small = get_more(db, cursor['id'], 'orders', maxTimeMS=50, batchSize=3)['cursor']
        eq(seqs(small['nextBatch']), [13, 14, 15], 'client batchSize honoured')
        eq(small['postBatchResumeToken'], small['nextBatch'][-1]['_id'], 'PBRT mid-backlog')
    finally:
        sim.stop()


@test
def getmore_waits():
    sim = Sim({'await_ms': 400})
    try:
        db = sim.client().shop
        cursor = open_stream(db, 'orders')['cursor']

        def timed(**kw):
            start = time.time()
            batch = get_more(db, cursor['id'], 'orders', **kw)['cursor']['nextBatch']
            return batch, time.time() - start
        _, took = timed(maxTimeMS=300)
        check(0.25 <= took < 0.8, 'maxTimeMS 300 waited %.2fs' % took)
        _, took = timed()
        check(0.35 <= took < 0.9, 'no maxTimeMS waits await_ms (took %.2fs)' % took)
        _, took = timed(maxTimeMS=60000)
        check(1.9 <= took < 2.6, 'maxTimeMS capped at 2 s (took %.2fs)' % took)
        threading.Timer(0.3, lambda: sim.call('POST', '/events', {})).start()
        batch, took = timed(maxTimeMS=2000)
        check(len(batch) == 1 and took < 1.0,
              'returns as soon as an event arrives (%d events, %.2fs)' % (len(batch), took))
    finally:
        sim.stop()


@test
def concurrent_clients():
    sim = Sim({'background_every': 0})
    try:
        results = {}

        def follower(name):
            db = sim.client().shop
            cursor = open_stream(db, 'orders')['cursor']
            start = time.time()
            get_more(db, cursor['id'], 'orders', maxTimeMS=1500)
            results[name] = time.time() - start
        threads = [threading.Thread(target=follower, args=(n,)) for n in range(3)]
        start = time.time()
        for t in threads:
            t.start()
        time.sleep(0.3)
        ping_start = time.time()
        sim.client().admin.command('ping')
        ping = time.time() - ping_start
        for t in threads:
            t.join()
        total = time.time() - start
        eq(len(results), 3, 'all followers finished')
        check(total < 2.6, 'waiting getMores run in parallel (%.2fs)' % total)
        check(ping < 0.5, 'other connections are served meanwhile (%.2fs)' % ping)
    finally:
        sim.stop()


@test
def retention_and_history_lost():
    sim = Sim({'rate': 3600, 'retention': 600, 'background_every': 30,
               'events': 2, 'initial_oplog_span': 3600})
    try:
        db = sim.client().shop
        state = sim.state()
        check(state['window_seconds'] <= 600, 'retention applied: %s' % state)
        check(state['oldest']['t'] >= state['now']['t'] - 600,
              'prefilled span truncated at once (retention < span): %s' % state)
        old = {'_data': '82%08X%08X' % (1699990000, 1) + EVENT_TAIL + '%016X04' % 1}
        err = raises(lambda: open_stream(db, 'orders', {'resumeAfter': old}), 286)
        eq(err.details.get('codeName'), 'ChangeStreamHistoryLost', 'codeName')
        check(err.has_error_label('NonResumableChangeStreamError'), 'label')
        check('no longer be in the oplog' in err.details['errmsg'], 'errmsg')
        raises(lambda: open_stream(db, 'orders', {
            'startAtOperationTime': Timestamp(1699990000, 1)}), 286)
        # A cursor not polled for longer than the retention falls off.
        cursor = open_stream(db, 'orders')['cursor']
        time.sleep(0.5)   # 30 simulated minutes > 10 minute retention
        err = raises(lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=10), 136)
        eq(err.details.get('codeName'), 'CappedPositionLost', '136 codeName')
        check(not err.details.get('errorLabels'), '136 has no labels')
        raises(lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=10), 43)
        # Retention off: the window grows with the clock.
        sim.call('POST', '/retention', {'seconds': None})
        before = sim.state()
        time.sleep(0.3)
        after = sim.state()
        check(after['window_seconds'] > before['window_seconds'] >= 0, 'window grows')
        eq(after['oldest'], before['oldest'], 'nothing truncated')
        # Explicit truncation.
        sim.call('POST', '/clock', {'rate': 0})
        posted = sim.call('POST', '/events', {'count': 2})
        token = posted['last_token']
        cut = sim.call('POST', '/truncate', {'before': posted['last_time']})
        check(cut['removed'] > 0, 'truncate removed entries')
        eq(cut['oldest'], posted['last_time'], 'oldest is the cut point')
        eq(open_stream(db, 'orders', {'resumeAfter': token})['ok'], 1.0,
           'token at the oldest entry still resumes')
        time_before = dict(posted['last_time'], i=posted['last_time']['i'] - 1)
        raises(lambda: open_stream(db, 'orders', {'startAtOperationTime': Timestamp(
            time_before['t'], time_before['i'])}), 286)
    finally:
        sim.stop()


@test
def invalidate_and_start_after():
    sim = Sim({'background_every': 0, 'events': 1})
    try:
        db = sim.client().shop
        coll_cursor = open_stream(db, 'orders')['cursor']
        db_cursor = open_stream(db, 1)['cursor']
        inv = sim.call('POST', '/invalidate', {'ns': 'shop.orders'})
        got = get_more(db, coll_cursor['id'], 'orders', maxTimeMS=50)['cursor']
        eq([d['operationType'] for d in got['nextBatch']], ['drop', 'invalidate'],
           'collection stream: drop then invalidate')
        eq(got['id'], 0, 'invalidated cursor is closed')
        eq(got['nextBatch'][1]['_id'], inv['invalidate_token'], 'invalidate token')
        check(inv['invalidate_token']['_data'] > inv['drop_token']['_data'], 'token order')
        dbgot = get_more(db, db_cursor['id'], '$cmd.aggregate', maxTimeMS=50)['cursor']
        eq([d['operationType'] for d in dbgot['nextBatch']], ['drop'], 'db stream: drop only')
        check(dbgot['id'] != 0, 'db stream stays open')
        raises(lambda: get_more(db, coll_cursor['id'], 'orders'), 43)
        raises(lambda: open_stream(db, 'orders', {'resumeAfter': inv['invalidate_token']}), 260)
        after_drop = open_stream(db, 'orders', {'resumeAfter': inv['drop_token']})['cursor']
        eq([d['operationType'] for d in after_drop['firstBatch']], ['invalidate'],
           'resume after the drop gives the invalidate')
        restarted = open_stream(db, 'orders', {'startAfter': inv['invalidate_token']})['cursor']
        eq(restarted['firstBatch'], [], 'startAfter invalidate: nothing old')
        sim.call('POST', '/events', {})
        more = get_more(db, restarted['id'], 'orders', maxTimeMS=50)['cursor']
        eq(seqs(more['nextBatch']), [2], 'startAfter invalidate: new events')
    finally:
        sim.stop()


@test
def cursor_bookkeeping():
    sim = Sim()
    try:
        db = sim.client().shop
        raises(lambda: get_more(db, 12345, 'orders'), 43)
        a = open_stream(db, 'orders')['cursor']['id']
        b = open_stream(db, 'orders')['cursor']['id']
        check(a != b, 'unique cursor ids')
        eq(sim.state()['cursors'], 2, 'open cursors')
        killed = db.command('killCursors', 'orders', cursors=[Int64(a), Int64(999)])
        eq(killed['cursorsKilled'], [a], 'cursorsKilled')
        eq(killed['cursorsNotFound'], [999], 'cursorsNotFound')
        eq(sim.state()['cursors'], 1, 'cursor forgotten')
        raises(lambda: get_more(db, a, 'orders'), 43)
        with db.orders.watch() as stream:
            stream.try_next()
        time.sleep(0.2)
        eq(sim.state()['cursors'], 1, 'pymongo killCursors on close')
    finally:
        sim.stop()


@test
def faults():
    sim = Sim({'background_every': 0})
    try:
        client = sim.client(retryReads=False)
        db = client.shop
        cursor = open_stream(db, 'orders')['cursor']
        # Default error: 286 with its label; the failed getMore ends the cursor.
        sim.call('POST', '/fault', {'command': 'getMore'})
        err = raises(lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=10), 286)
        check(err.has_error_label('NonResumableChangeStreamError'), 'default label')
        raises(lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=10), 43)
        # Custom error, count 2, then normal again.
        sim.call('POST', '/fault', {'command': 'aggregate', 'kind': 'error', 'count': 2,
                                    'code': 6, 'codeName': 'HostUnreachable',
                                    'errmsg': 'boom', 'labels': ['ResumableChangeStreamError']})
        for _ in range(2):
            err = raises(lambda: open_stream(db, 'orders'), 6)
            eq((err.details['codeName'], err.details['errmsg'],
                err.details['errorLabels']),
               ('HostUnreachable', 'boom', ['ResumableChangeStreamError']), 'custom error')
        eq(open_stream(db, 'orders')['ok'], 1.0, 'fault used up')
        # "any" matches any command but the handshake.
        sim.call('POST', '/fault', {'command': 'any', 'code': 13, 'labels': []})
        err = raises(lambda: db.command('ping'), 13)
        check('errorLabels' not in err.details, 'labels [] = none')
        # Stall, then answer normally.
        sim.call('POST', '/fault', {'command': 'ping', 'kind': 'stall', 'seconds': 0.6})
        start = time.time()
        db.command('ping')
        check(time.time() - start >= 0.55, 'stall')
        # Hangup: the connection drops.
        sim.call('POST', '/fault', {'command': 'ping', 'kind': 'hangup'})
        raises(lambda: db.command('ping'), exc=AutoReconnect)
        eq(db.command('ping')['ok'], 1.0, 'reconnects after hangup')
        # DELETE /fault clears pending faults.
        sim.call('POST', '/fault', {'command': 'ping', 'count': 5})
        eq(len(sim.state()['faults']), 1, 'pending fault listed')
        eq(sim.call('DELETE', '/fault')['cleared'], 1, 'cleared')
        eq(db.command('ping')['ok'], 1.0, 'no fault after DELETE')
        faulted = [(e['command'], e['fault']) for e in sim.log(all=True) if e['fault']]
        check(('getMore', 'error') in faulted and ('ping', 'hangup') in faulted
              and ('ping', 'stall') in faulted, 'faults recorded in the log: %s' % faulted)
        # A change stream resumes by itself after a hangup, with resumeAfter.
        posted = sim.call('POST', '/events', {'count': 2})
        with db.orders.watch(max_await_time_ms=100,
                             start_at_operation_time=Timestamp(1700000000, 1)) as stream:
            first = [stream.try_next()['fullDocument']['seq'] for _ in range(2)]
            sim.call('POST', '/fault', {'command': 'getMore', 'kind': 'hangup'})
            stream.try_next()
            sim.call('POST', '/events', {'count': 2})
            second = []
            deadline = time.time() + 5
            while len(second) < 2 and time.time() < deadline:
                doc = stream.try_next()
                if doc:
                    second.append(doc['fullDocument']['seq'])
        eq(first + second, [1, 2, 3, 4], 'no event lost or repeated across the resume')
        resume = [e for e in sim.log() if e['command'] == 'aggregate'][-1]
        eq(resume['doc']['pipeline'][0]['$changeStream'].get('resumeAfter'),
           posted['last_token'], 'resumed with resumeAfter = last token')
    finally:
        sim.stop()


@test
def server_down():
    sim = Sim()
    try:
        client = sim.client(serverSelectionTimeoutMS=500, retryReads=False)
        eq(client.admin.command('ping')['ok'], 1.0, 'up')
        sim.call('POST', '/down', {'seconds': 1.5})
        check(sim.state()['down'], 'state says down')
        raises(lambda: client.admin.command('ping'), exc=pymongo.errors.PyMongoError)
        fresh = sim.client(serverSelectionTimeoutMS=300)
        raises(lambda: fresh.admin.command('ping'), exc=pymongo.errors.ServerSelectionTimeoutError)
        time.sleep(1.6)
        check(not sim.state()['down'], 'state says up again')
        again = sim.client(serverSelectionTimeoutMS=3000)
        eq(again.admin.command('ping')['ok'], 1.0, 'back up')
        downs = [e for e in sim.log(all=True) if e['fault'] == 'down']
        check(any(e['command'] in ('isMaster', 'ismaster') for e in downs),
              'handshakes hung up while down')
    finally:
        sim.stop()


@test
def clock_control():
    sim = Sim({'background_every': 10, 'rate': 1})
    try:
        s0 = sim.state()
        s1 = sim.call('POST', '/clock', {'advance': 3600})
        check(s1['now']['t'] - s0['now']['t'] >= 3600, 'advance moves now')
        check(s1['entries'] - s0['entries'] >= 359, 'background entries for the jump')
        eq(s1['newest']['t'] % 10, 0, 'entries at background_every spacing')
        sim.call('POST', '/clock', {'rate': 3600})
        time.sleep(0.5)
        s2 = sim.state()
        check(s2['now']['t'] - s1['now']['t'] >= 1500, 'fast clock (%d s)'
              % (s2['now']['t'] - s1['now']['t']))
        eq(s2['rate'], 3600, 'rate in state')
        sim.call('POST', '/clock', {'rate': 0})
        a = sim.state()['now']['t']
        time.sleep(0.3)
        eq(sim.state()['now']['t'], a, 'rate 0 freezes the clock')
        e1 = sim.call('POST', '/events', {})
        e2 = sim.call('POST', '/events', {})
        eq(e1['last_time']['t'], e2['last_time']['t'], 'same second')
        check(e2['last_time']['i'] > e1['last_time']['i'], 'increment grows')
        quiet = Sim({'background_every': 0})
        try:
            eq(quiet.call('POST', '/clock', {'advance': 600})['entries'], 1,
               'no background: only the startup no-op')
        finally:
            quiet.stop()
    finally:
        sim.stop()


@test
def control_api_errors():
    sim = Sim()
    try:
        sim.call('POST', '/events', raw=b'{not json', expect=400)
        sim.call('POST', '/events', raw=b'[1]', expect=400)
        sim.call('POST', '/events', {'count': 0}, expect=400)
        sim.call('POST', '/events', {'ns': 'nodot'}, expect=400)
        sim.call('POST', '/events', {'op': 'delete'}, expect=400)
        sim.call('POST', '/fault', {'kind': 'explode'}, expect=400)
        sim.call('POST', '/truncate', {'before': 5}, expect=400)
        sim.call('POST', '/clock', {'rate': -1}, expect=400)
        sim.call('POST', '/retention', {}, expect=400)
        sim.call('GET', '/nope', expect=404)
        sim.call('GET', '/log?since=x', expect=400)
        eq(sim.state()['events'], 0, 'still alive and unchanged')
        log = sim.log()
        eq(sim.log(since=len(sim.log(all=True))), [], 'since = last n gives nothing new')
        eq(log, [], 'no mongo commands yet')
    finally:
        sim.stop()


@test
def scenario_validation():
    tmp = tempfile.mkdtemp(prefix='mongosim-selftest-')
    try:
        for bad in ({'evnets': 3}, {'rate': -1}, {'namespace': 'x'}, {'batch_size': 0}):
            path = os.path.join(tmp, 's.json')
            with open(path, 'w') as f:
                json.dump(bad, f)
            proc = subprocess.run(['/usr/bin/python3', SIM, '--port-file', path + '.ports',
                                   '--scenario', path], capture_output=True, timeout=10)
            eq(proc.returncode, 2, 'bad scenario %s refused' % bad)
            check(not os.path.exists(path + '.ports'), 'no port file for a bad scenario')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sim = Sim({'description': 'comments allowed', '_note': 'too', 'set_name': 'other',
               'max_wire_version': 13})
    try:
        client = pymongo.MongoClient('mongodb://localhost:%d/?replicaSet=other'
                                     % sim.ports['mongo_port'], serverSelectionTimeoutMS=3000)
        hello = client.admin.command('isMaster')
        eq((hello['setName'], hello['maxWireVersion']), ('other', 13), 'scenario identity')
        client.close()
    finally:
        sim.stop()


@test
def shutdown_is_clean_and_quick():
    for how in ('http', 'term', 'int'):
        sim = Sim()
        client = sim.client()
        db = client.shop
        cursor = open_stream(db, 'orders')['cursor']
        waiter = threading.Thread(target=lambda: _ignore(
            lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=2000)))
        waiter.start()
        time.sleep(0.2)   # a getMore is waiting while we stop
        rc, took = sim.stop(how)
        waiter.join()
        eq(rc, 0, 'exit code after %s' % how)
        check(took < 1.0, 'stopped in %.2fs after %s' % (took, how))


@test
def documentdb_profile():
    sim = Sim({'profile': 'documentdb', 'rate': 0, 'retention': 3600,
               'history_extra': 900, 'initial_oplog_span': 7200})
    try:
        db = sim.client().shop
        t0 = 1700000000
        eq(db.client.admin.command('hello')['setName'], 'rs0', 'an RS primary')
        eq(db.client.admin.command('buildInfo')['version'], '5.0.0', 'version')
        eq(db.client.admin.command('ping')['operationTime'].time, t0, 'ping operationTime')
        state = sim.state()
        eq(state['profile'], 'documentdb', 'profile in state')
        eq(state['oldest']['t'], t0 - 4500, 'retention + history_extra kept')
        cursor = open_stream(db, 'orders')['cursor']
        check(cursor['postBatchResumeToken']['_data'].startswith('01'), '01 PBRT')
        posted = sim.call('POST', '/events', {'count': 1})
        data = posted['last_token']['_data']
        check(data.startswith('01') and data == data.lower(), 'lowercase 01 token: ' + data)
        got = get_more(db, cursor['id'], 'orders', maxTimeMS=50)['cursor']['nextBatch']
        check('wallTime' not in got[0] and 'clusterTime' in got[0], 'no wallTime')
        eq(got[0]['_id']['_data'], data, 'event token')
        hwm = {'_data': '01%08X%08X04' % (t0 - 4000, 1)}
        eq(open_stream(db, 'orders', {'resumeAfter': hwm})['ok'], 1.0,
           'an hand-built uppercase 01 token older than the retention, still kept')
        old = {'_data': '01%08x%08x04' % (t0 - 4600, 1)}
        err = raises(lambda: open_stream(db, 'orders', {'resumeAfter': old}), 136)
        eq(err.details['errmsg'], 'CollectionScan died due to position in capped '
           'collection being deleted', '136 errmsg')
        check(not err.details.get('errorLabels'), 'no labels')
        raises(lambda: open_stream(db, 'orders', {
            'startAtOperationTime': Timestamp(t0 - 4500, 0)}), 136)
        eq(open_stream(db, 'orders', {'startAtOperationTime': Timestamp(t0 - 4499, 0)})['ok'],
           1.0, 'a start inside the kept history')
        err = raises(lambda: open_stream(db, 'orders', {'startAfter': hwm}), 40415)
        check('startAfter' in err.details['errmsg'] and 'unknown field' in err.details['errmsg'],
              err.details['errmsg'])
        raises(lambda: db.client.local.command('find', 'oplog.rs'), 13)
        raises(lambda: db.command('aggregate', 'orders', pipeline=[
            {'$changeStream': {}}, {'$changeStreamSplitLargeEvent': {}}], cursor={}), 40324)
        raises(lambda: open_stream(db, 'orders', {'resumeAfter': {'_data': '82' + '0' * 16}}), 9)
        other = sim.call('POST', '/events', {'ns': 'shop.other'})['last_token']
        eq(open_stream(db, 'orders', {'resumeAfter': other})['ok'], 1.0,
           'a foreign token resumes by its time (never 280)')
        inv = sim.call('POST', '/invalidate', {})
        raises(lambda: open_stream(db, 'orders', {'resumeAfter': inv['invalidate_token']}), 260)
        raises(lambda: open_stream(db, 'orders', {'startAfter': inv['invalidate_token']}), 40415)
    finally:
        sim.stop()


@test
def truncate_markers_step():
    # Markers of (600 + 0) / 4 = 150 s: the oldest entry jumps in 150 s steps.
    sim = Sim({'rate': 0, 'retention': 600, 'truncate_markers': 4,
               'background_every': 10, 'initial_oplog_span': 1200})
    try:
        seen = []
        for _ in range(40):
            state = sim.call('POST', '/clock', {'advance': 10})
            now, oldest = state['now']['t'], state['oldest']['t']
            check(now - 600 - 150 <= oldest <= now - 600,
                  'oldest %d within [now-750, now-600], now %d' % (oldest, now))
            eq(state['window_seconds'], state['newest']['t'] - oldest, 'window_seconds')
            seen.append(oldest)
        jumps = [b - a for a, b in zip(seen, seen[1:]) if b != a]
        check(jumps and all(j == 150 for j in jumps), 'stepwise by 150 s: %s' % jumps)
        check(len(jumps) < len(seen) - 1, 'stands still between jumps')
    finally:
        sim.stop()
    sim = Sim({'rate': 0, 'retention': 600, 'history_extra': 300,
               'initial_oplog_span': 2000})
    try:
        state = sim.state()
        eq(state['oldest']['t'], state['now']['t'] - 900, 'history_extra is kept too')
    finally:
        sim.stop()


@test
def mongodb_280_and_136():
    sim = Sim({'rate': 0})
    try:
        db = sim.client().shop
        other = sim.call('POST', '/events', {'ns': 'shop.other'})['last_token']
        err = raises(lambda: open_stream(db, 'orders', {'resumeAfter': other}), 280)
        eq(err.details['errmsg'], 'cannot resume stream; the resume token was not found. '
           '{_data: "%s"}' % other['_data'], '280 errmsg')
        eq(open_stream(db, 1, {'resumeAfter': other})['ok'], 1.0, 'in a database stream')
        t, i = token_ts(other)
        eq(open_stream(db, 'orders', {'startAtOperationTime': Timestamp(t, i)})['ok'], 1.0,
           'its time still resumes')
        mine = sim.call('POST', '/events', {})['last_token']
        eq(open_stream(db, 'orders', {'resumeAfter': mine})['ok'], 1.0, 'own token')
        cursor = open_stream(db, 'orders')['cursor']
        sim.call('POST', '/events', {'count': 2})
        sim.call('POST', '/truncate', {'before': sim.state()['newest']})
        err = raises(lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=10), 136)
        eq(err.details['codeName'], 'CappedPositionLost', 'an open cursor fell off: 136')
        raises(lambda: open_stream(db, 'orders', {'resumeAfter': mine}), 286)
    finally:
        sim.stop()


@test
def large_events_and_split():
    sim = Sim({'rate': 0})
    try:
        db = sim.client().shop
        cursor = open_stream(db, 'orders')['cursor']
        split_cursor = db.command('aggregate', 'orders', pipeline=[
            {'$changeStream': {}}, {'$changeStreamSplitLargeEvent': {}}], cursor={})['cursor']
        raises(lambda: db.command('aggregate', 'orders', pipeline=[
            {'$changeStream': {}}, {'$changeStreamSplitLargeEvent': {}}, {'$match': {}}],
            cursor={}), 7182803)
        before = sim.state()['newest']
        big = sim.call('POST', '/events', {'size': 20000000})
        err = raises(lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=50), 10334)
        check(not err.details.get('errorLabels'), 'no labels')
        check('BSONObj size' in err.details['errmsg'], err.details['errmsg'])
        raises(lambda: get_more(db, cursor['id'], 'orders', maxTimeMS=50), 43)
        start = {'startAtOperationTime': Timestamp(before['t'], before['i'] + 1)}
        raises(lambda: open_stream(db, 'orders', start), 10334)
        frags, pbrts = [], []
        for _ in range(4):
            batch = get_more(db, split_cursor['id'], 'orders', maxTimeMS=50)['cursor']
            frags += batch['nextBatch']
            pbrts.append(batch['postBatchResumeToken']['_data'])
            if frags and frags[-1]['splitEvent']['fragment'] == frags[-1]['splitEvent']['of']:
                break
        eq([f['splitEvent'] for f in frags], [{'fragment': 1, 'of': 2}, {'fragment': 2, 'of': 2}],
           'two fragments')
        eq(pbrts[-1], frags[-1]['_id']['_data'], 'PBRT is the last fragment sent')
        ids = [f['_id']['_data'] for f in frags]
        check(big['last_token']['_data'] < ids[0] < ids[1], 'fragment tokens ordered')
        eq([token_ts(f['_id']) for f in frags], [token_ts(big['last_token'])] * 2, 'same (t, i)')
        check('fullDocument' in frags[0] and 'fullDocumentBeforeChange' in frags[1], 'fields shared')
        resumed = db.command('aggregate', 'orders', pipeline=[
            {'$changeStream': {'resumeAfter': frags[0]['_id']}},
            {'$changeStreamSplitLargeEvent': {}}], cursor={})['cursor']
        eq([f['splitEvent']['fragment'] for f in resumed['firstBatch']], [2],
           'resume after fragment 1 gives fragment 2')
        # Two 10 MB events: a batch stops before the second.
        sim.call('POST', '/events', {'count': 2, 'size': 10000000})
        first = get_more(db, resumed['id'], 'orders', maxTimeMS=50)['cursor']['nextBatch']
        second = get_more(db, resumed['id'], 'orders', maxTimeMS=50)['cursor']['nextBatch']
        eq((len(first), len(second)), (1, 1), 'one 10 MB event a batch')
    finally:
        sim.stop()


@test
def mongos_profile():
    sim = Sim({'profile': 'mongos', 'rate': 0, 'initial_oplog_span': 7200,
               'shards': [{'name': 'shard0', 'retention': 3600},
                          {'name': 'shard1', 'retention': 1800, 'truncate_markers': 0}]})
    try:
        port = sim.ports['mongo_port']
        eq(sim.ports['uri'], 'mongodb://localhost:%d/' % port, 'router uri')
        eq([s['name'] for s in sim.ports['shards']], ['shard0', 'shard1'], 'shards')
        client = pymongo.MongoClient(sim.ports['uri'], serverSelectionTimeoutMS=5000)
        sim.clients.append(client)
        hello = client.admin.command('hello')
        eq(hello.get('msg'), 'isdbgrid', 'router hello')
        check('setName' not in hello and 'hosts' not in hello, 'no set name: %s' % hello)
        shards = client.admin.command('listShards')['shards']
        eq(shards[1], {'_id': 'shard1', 'host': 'shard1/localhost:%d'
                       % sim.ports['shards'][1]['port'], 'state': 1}, 'listShards')
        err = raises(lambda: client.local.command('find', 'oplog.rs'), 20)
        eq(err.details['errmsg'], "Can't use 'local' database through mongos", 'errmsg')
        direct = pymongo.MongoClient(sim.ports['shards'][1]['uri'], serverSelectionTimeoutMS=5000)
        sim.clients.append(direct)
        eq(direct.admin.command('hello')['setName'], 'shard1', 'a shard is an RS primary')
        first = direct.local['oplog.rs'].find().sort('$natural', 1).limit(1)[0]
        eq(first['ts'].time, 1700000000 - 1800, "shard1's oldest entry")
        state = sim.state()
        eq([s['oldest']['t'] for s in state['shards']], [1700000000 - 3600, 1700000000 - 1800],
           'per-shard windows')
        eq(state['oldest'], state['shards'][1]['oldest'], 'oldest: the edge shard')
        db = client.shop
        cursor = open_stream(db, 'orders')['cursor']
        a = sim.call('POST', '/events', {'shard': 'shard1'})
        b = sim.call('POST', '/events', {'shard': 'shard0'})
        got = get_more(db, cursor['id'], 'orders', maxTimeMS=50)['cursor']['nextBatch']
        eq(seqs(got), [a['first_seq'], b['first_seq']], 'merged in (t, i) order')
        check(got[0]['_id']['_data'].startswith('82'), '82 tokens')
        raises(lambda: open_stream(db, 'orders', {
            'startAtOperationTime': Timestamp(1700000000 - 1800, 0)}), 286)
        shard0_only = {'_data': '82%08X%08X' % (1700000000 - 2000, 1) + HWM_TAIL}
        raises(lambda: open_stream(db, 'orders', {'resumeAfter': shard0_only}), 286)
        eq(open_stream(db, 'orders', {'startAtOperationTime': Timestamp(1700000000 - 1799, 0)})
           ['ok'], 1.0, 'every shard has it')
        sim.call('POST', '/events', {'shard': 'shard9'}, expect=400)
        sim.call('POST', '/down', {'seconds': 2, 'shard': 'shard1'})
        eq([s['down'] for s in sim.state()['shards']], [False, True], 'shard1 down')
        eq(client.admin.command('ping')['ok'], 1.0, 'the router still answers')
        sim.call('POST', '/retention', {'seconds': 600, 'shard': 'shard0'})
        eq(sim.state()['shards'][0]['oldest']['t'], 1700000000 - 600, 'retention per shard')
    finally:
        sim.stop()
    for bad in ({'profile': 'mongodb', 'shards': []}, {'profile': 'nosql'},
                {'profile': 'mongos', 'shards': [{'name': 'a', 'retension': 1}]}):
        tmp = tempfile.mkdtemp(prefix='mongosim-selftest-')
        path = os.path.join(tmp, 's.json')
        with open(path, 'w') as f:
            json.dump(bad, f)
        proc = subprocess.run(['/usr/bin/python3', SIM, '--port-file', path + '.ports',
                               '--scenario', path], capture_output=True, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
        eq(proc.returncode, 2, 'bad scenario %s refused' % bad)


def _ignore(fn):
    try:
        fn()
    except Exception:
        pass


# --------------------------------------------------------------------------

def main(argv):
    global VERBOSE
    if '-v' in argv:
        VERBOSE = True
        argv = [a for a in argv if a != '-v']
    selected = [t for t in TESTS if not argv or any(a in t.__name__ for a in argv)]
    failed = []
    for fn in selected:
        start = time.time()
        try:
            fn()
        except Exception as err:
            failed.append(fn.__name__)
            print('FAIL %-40s %5.1fs  %s' % (fn.__name__, time.time() - start, err))
            if not isinstance(err, AssertionError) or VERBOSE:
                traceback.print_exc()
        else:
            print('ok   %-40s %5.1fs' % (fn.__name__, time.time() - start))
    print('%d passed, %d failed' % (len(selected) - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
