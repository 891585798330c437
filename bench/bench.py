#!/usr/bin/python3
"""make bench: what tokenwatch costs next to a bare libmongoc loop and raw Redis.

For each event size, against bench_source (a C change-stream source that
answers getMore with pre-built batches; its own CPU is reported) and one
redis-server on loopback, each reader runs REPEATS times:

  (a) bench_bare: mongoc_change_stream_next only, tokenwatch's options
  (b) tokenwatch --sink none
  (c) tokenwatch --sink stdout > /dev/null
  (d) tokenwatch --sink redis
  (b') (b) with a Slack webhook that accepts and never answers
  redis-benchmark -P 64 XADD with tokenwatch's fields and a same-size event

and the figures (CPU of the reader's process from wait4, wall time, VmHWM
as ru_maxrss, commit latency from tokenwatch's debug lines, time from exec
to the first event and the first checkpoint) are printed as a Markdown
table, min and median of the repeats, and written to --out.

Timings are reported, never asserted: nothing here fails on a slow machine.
"""
import argparse
import calendar
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_file(path, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return open(path).read().strip()
        time.sleep(0.01)
    raise RuntimeError('%s did not appear' % path)


class Redis:
    def __init__(self, tmp):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ['redis-server', '--port', str(self.port), '--bind', '127.0.0.1',
             '--save', '', '--appendonly', 'no', '--dir', tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if self.cli('PING') == 'PONG':
                return
            time.sleep(0.01)
        raise RuntimeError('redis-server did not start')

    def cli(self, *args):
        r = subprocess.run(['redis-cli', '-p', str(self.port)] + list(args),
                           capture_output=True, text=True)
        return r.stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Source:
    def __init__(self, build, doc_bytes, tmp):
        self.port_file = os.path.join(tmp, 'source.port')
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.err = open(os.path.join(tmp, 'source.err'), 'w+')
        self.proc = subprocess.Popen(
            [os.path.join(build, 'bench', 'bench_source'), '--doc-bytes',
             str(doc_bytes), '--port-file', self.port_file],
            stderr=self.err)
        self.port = int(wait_for_file(self.port_file))
        self.uri = 'mongodb://127.0.0.1:%d/?directConnection=true' % self.port

    def cpu(self):
        """User + system seconds so far, from /proc."""
        fields = open('/proc/%d/stat' % self.proc.pid).read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.err.seek(0)
        m = re.search(r'event (\d+) bytes', self.err.read())
        return int(m.group(1)) if m else 0


class HangingWebhook:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self):
        self.sock.close()
        for c in self.held:
            c.close()


def run_measured(argv, stdout, stderr, env=None):
    """Runs argv; returns (wall seconds, cpu seconds, peak RSS in KiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError('%s exited %d' % (argv[0], proc.returncode))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def tokenwatch_argv(args, source, redis, sink, name, events, extra=()):
    return [os.path.join(args.build, 'tokenwatch'), 'run', '--mongo-uri', source.uri,
            '--redis-url', 'redis://127.0.0.1:%d/0' % redis.port, '--db', 'bench',
            '--collection', 'events', '--sink', sink, '--name', name,
            '--max-events', str(events), '--on-missing-checkpoint', 'now',
            '--stream-maxlen', str(args.maxlen), '--metrics-addr', 'off',
            '--log-level', 'debug'] + list(extra)


COMMIT_RE = re.compile(r'checkpoint \S+ .*events=(\d+) .*committed in ([0-9.]+) ms')


def commit_latencies(path):
    out = []
    with open(path, errors='replace') as f:
        for line in f:
            m = COMMIT_RE.search(line)
            if m and int(m.group(1)) > 0:
                out.append(float(m.group(2)))
    return out


LOG_TIME = r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z .*'


def follow_seconds(path):
    """Seconds of following: from tokenwatch's 'following' line to its
    'stopping after --max-events' (so neither the start nor the exit, which
    may wait for an alert, counts), or bench_bare's own figure."""
    text = open(path, errors='replace').read()
    m = re.search(r'(\d+) events ([0-9.]+) ms after opening', text)
    if m:
        return float(m.group(2)) / 1e3
    stamps = {}
    for key, pat in (('from', 'following '), ('to', 'stopping after --max-events')):
        m = re.search(LOG_TIME + re.escape(pat), text, re.M)
        if not m:
            raise RuntimeError('no %r line in %s' % (pat, path))
        t = time.strptime(m.group(1).split('.')[0], '%Y-%m-%dT%H:%M:%S')
        stamps[key] = calendar.timegm(t) + float('0.' + m.group(1).split('.')[1])
    return max(stamps['to'] - stamps['from'], 1e-3)


def one_run(args, reader, source, redis, events, tmp, hook=None):
    """One reader's run: a dict of figures."""
    err_path = os.path.join(tmp, 'run.err')
    src_cpu = source.cpu()
    with open(err_path, 'w') as err, open(os.devnull, 'w') as null:
        if reader == 'bare':
            argv = [os.path.join(args.build, 'bench', 'bench_bare'), source.uri, str(events)]
        else:
            redis.cli('FLUSHALL')
            sink = {'none': 'none', 'hook': 'none', 'stdout': 'stdout',
                    'redis': 'redis'}[reader]
            extra = ['--slack-webhook', 'http://127.0.0.1:%d/hook' % hook.port] \
                if reader == 'hook' else []
            argv = tokenwatch_argv(args, source, redis, sink, 'bench', events, extra)
        wall, cpu, rss = run_measured(argv, null, err)
    out = {'wall': wall, 'follow': follow_seconds(err_path), 'cpu': cpu, 'rss': rss,
           'src_cpu': source.cpu() - src_cpu}
    if reader == 'redis':
        out['commits'] = commit_latencies(err_path)
        length = int(redis.cli('XLEN', 'tokenwatch:{bench}:events') or 0)
        if length < min(events, args.maxlen) * 0.99:
            raise RuntimeError('the stream holds %d entries after %d events' % (length, events))
    return out


def start_latency(args, source, redis, tmp):
    """ms from exec to the first event on stdout and to the first checkpoint
    that covers an event (stderr's debug line), as the harness reads them."""
    redis.cli('FLUSHALL')
    argv = tokenwatch_argv(args, source, redis, 'stdout', 'start', 1,
                           ['--checkpoint-every', '1'])
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = {}

    def read_err():
        for line in proc.stderr:
            m = COMMIT_RE.search(line)
            if m and int(m.group(1)) > 0 and 'checkpoint' not in seen:
                seen['checkpoint'] = time.monotonic()

    t = threading.Thread(target=read_err)
    t.start()
    proc.stdout.readline()
    first_event = time.monotonic()
    proc.stdout.read()
    proc.wait()
    t.join()
    return ((first_event - start) * 1e3,
            (seen.get('checkpoint', float('nan')) - start) * 1e3)


def bare_start(args, source):
    r = subprocess.run([os.path.join(args.build, 'bench', 'bench_bare'), source.uri, '1'],
                       capture_output=True, text=True)
    m = re.search(r'first event ([0-9.]+) ms', r.stderr)
    return float(m.group(1)) if m else float('nan')


def sample_event(args, source, redis):
    redis.cli('FLUSHALL')
    r = subprocess.run(tokenwatch_argv(args, source, redis, 'stdout', 'sample', 1),
                       capture_output=True, text=True)
    return r.stdout.splitlines()[0]


def xadd_ceiling(args, redis, event_json, events):
    """redis-benchmark -P 64: XADD with tokenwatch's five fields."""
    redis.cli('FLUSHALL')
    token = '{ "_data" : "82%s2B022C0100296E5A1004%s04" }' % ('6' * 16, '0' * 16)
    r = subprocess.run(['redis-benchmark', '-h', '127.0.0.1', '-p', str(redis.port),
                        '-n', str(events), '-P', '64', '-q', 'XADD',
                        'tokenwatch:{bench}:events', 'MAXLEN', '~', str(args.maxlen), '*',
                        'event', event_json, 'token', token,
                        'cluster_time', '1764860000.1', 'op', 'insert', 'ns', 'bench.events'],
                       capture_output=True, text=True)
    m = re.findall(r'([0-9.]+) requests per second', r.stdout)
    if not m:
        raise RuntimeError('redis-benchmark: %s %s' % (r.stdout, r.stderr))
    return float(m[-1])


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float('nan')


READERS = ['bare', 'none', 'stdout', 'redis', 'hook']
LABELS = {'bare': '(a) bare libmongoc loop', 'none': '(b) --sink none',
          'stdout': '(c) --sink stdout >/dev/null', 'redis': '(d) --sink redis',
          'hook': "(b') --sink none, hanging webhook"}


def bench_size(args, doc_bytes, events, tmp):
    source = Source(args.build, doc_bytes, tmp)
    redis = Redis(tmp)
    hook = HangingWebhook()
    runs = {r: [] for r in READERS}
    try:
        for rep in range(args.repeats):
            for reader in READERS:
                runs[reader].append(one_run(args, reader, source, redis, events, tmp, hook))
                print('  size %d, run %d, %-6s %.2f s wall, %.2f s CPU' % (
                    doc_bytes, rep + 1, reader, runs[reader][-1]['wall'],
                    runs[reader][-1]['cpu']), file=sys.stderr)
        starts = [start_latency(args, source, redis, tmp) for _ in range(args.repeats)]
        bare_starts = [bare_start(args, source) for _ in range(args.repeats)]
        event_json = sample_event(args, source, redis)
        ceilings = [xadd_ceiling(args, redis, event_json, min(events, 200000))
                    for _ in range(args.repeats)]
    finally:
        hook.stop()
        redis.stop()
        event_bytes = source.stop()
    return {'doc_bytes': doc_bytes, 'event_bytes': event_bytes, 'events': events,
            'json_bytes': len(event_json), 'runs': runs, 'starts': starts,
            'bare_starts': bare_starts, 'ceilings': ceilings}


def fmt_min_med(values, scale=1.0, digits=2):
    return '%.*f / %.*f' % (digits, min(values) * scale, digits,
                            statistics.median(values) * scale)


def size_table(res):
    n = res['events']
    runs = res['runs']
    bare_cpu = [r['cpu'] for r in runs['bare']]
    bare_med = statistics.median(bare_cpu)
    lines = ['### fullDocument %d B (event %d B of BSON, %d B of JSON), %d events' % (
        res['doc_bytes'], res['event_bytes'], res['json_bytes'], n), '',
        '| reader | events/s while following (min / median) | CPU µs per event (min / median) | '
        'CPU ÷ (a) (median) | peak RSS MiB (median) | source CPU µs/event (median) |',
        '|---|---:|---:|---:|---:|---:|']
    for reader in READERS:
        rr = runs[reader]
        rates = [n / r['follow'] for r in rr]
        cpu = [r['cpu'] / n * 1e6 for r in rr]
        lines.append('| %s | %s | %s | %.2f | %.1f | %.3f |' % (
            LABELS[reader], '%.0f / %.0f' % (min(rates), statistics.median(rates)),
            fmt_min_med(cpu), statistics.median([r['cpu'] for r in rr]) / bare_med,
            statistics.median([r['rss'] for r in rr]) / 1024,
            statistics.median([r['src_cpu'] for r in rr]) / n * 1e6))
    ceiling = statistics.median(res['ceilings'])
    redis_rate = statistics.median([n / r['follow'] for r in runs['redis']])
    hook_ratio = statistics.median([r['cpu'] for r in runs['hook']]) / \
        statistics.median([r['cpu'] for r in runs['none']])
    hook_rate = statistics.median([n / r['follow'] for r in runs['hook']]) / \
        statistics.median([n / r['follow'] for r in runs['none']])
    commits = [c for r in runs['redis'] for c in r.get('commits', [])]
    first_event = [s[0] for s in res['starts']]
    first_cp = [s[1] for s in res['starts']]
    lines += ['',
              '- XADD ceiling (`redis-benchmark -P 64`, same fields and event): '
              '%.0f / %.0f per s (min / median); (d) reaches %.2f of it' % (
                  min(res['ceilings']), ceiling, redis_rate / ceiling),
              '- (d) commit latency: median %.2f ms, p99 %.2f ms over %d commits' % (
                  statistics.median(commits) if commits else float('nan'),
                  pct(commits, 99), len(commits)),
              "- (b') with a webhook that never answers: CPU %.2f×, events/s %.2f× of (b)" % (
                  hook_ratio, hook_rate),
              '- exec to first event handed on: %s ms (min / median; bare loop %s ms); '
              'to the first checkpoint covering it: %s ms' % (
                  fmt_min_med(first_event, digits=0), fmt_min_med(res['bare_starts'], digits=0),
                  fmt_min_med(first_cp, digits=0)),
              '']
    return lines


def machine():
    model = ''
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    libs = []
    for pkg in ('libmongoc-1.0-0', 'libhiredis0.14', 'redis-server'):
        r = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', pkg],
                           capture_output=True, text=True)
        libs.append('%s %s' % (pkg, r.stdout or '?'))
    return '%s, %d CPUs, Linux %s; %s' % (model or platform.processor(), os.cpu_count(),
                                           platform.release(), ', '.join(libs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--sizes', default='100,1000,10000',
                    help='fullDocument sizes in bytes')
    ap.add_argument('--events', default='1000000,1000000,200000',
                    help='events per run, one per size')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--maxlen', type=int, default=100000, help='--stream-maxlen')
    ap.add_argument('--out', default=None, help='also write the report here')
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]
    counts = [int(s) for s in args.events.split(',')]
    if len(counts) < len(sizes):
        counts += [counts[-1]] * (len(sizes) - len(counts))
    for tool in ('redis-server', 'redis-cli', 'redis-benchmark'):
        if not shutil.which(tool):
            sys.exit('bench: %s not found (make deps)' % tool)
    tmp = tempfile.mkdtemp(prefix='tw-bench-')
    started = time.monotonic()
    lines = ['## make bench, %s' % time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), '',
             'Machine: %s.' % machine(), '',
             '%d runs of each reader per size; min / median over them.' % args.repeats, '']
    try:
        for size, count in zip(sizes, counts):
            lines += size_table(bench_size(args, size, count, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines.append('(%.0f s in all)' % (time.monotonic() - started))
    report = '\n'.join(lines) + '\n'
    print(report)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(report)


if __name__ == '__main__':
    main()
