#!/usr/bin/python3
"""A Kafka Connect stand-in: GET /connectors/{name}/offsets as KIP-875
shapes it ({"offsets": [{"partition": {...}, "offset": {...}}]}), an
unknown connector answered 404 {"error_code": 404, "message": ...} as
Connect's REST API does. Offsets are set by the test: PUT /control/{name}
with the reply's "offsets" list as body. Basic auth is checked when
--user USER:PASS is given (401 otherwise).

    /usr/bin/python3 tests/support/connect.py --port-file PATH [--user U:P]
"""
import argparse
import base64
import http.server
import json
import os
import threading

CONNECTORS = {}
LOCK = threading.Lock()
AUTH = None
REQUESTS = []


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with LOCK:
            REQUESTS.append({'path': self.path,
                             'auth': self.headers.get('Authorization')})
        if self.path == '/control/requests':
            with LOCK:
                return self._send(200, {'requests': REQUESTS})
        if AUTH and self.headers.get('Authorization') != AUTH:
            return self._send(401, {'error_code': 401, 'message': 'Unauthorized'})
        parts = self.path.strip('/').split('/')
        if len(parts) == 3 and parts[0] == 'connectors' and parts[2] == 'offsets':
            with LOCK:
                offsets = CONNECTORS.get(parts[1])
            if offsets is None:
                return self._send(404, {'error_code': 404,
                                        'message': 'Connector %s not found' % parts[1]})
            return self._send(200, {'offsets': offsets})
        return self._send(404, {'error_code': 404, 'message': 'Not found'})

    def do_PUT(self):
        parts = self.path.strip('/').split('/')
        body = json.loads(self.rfile.read(int(self.headers.get('Content-Length') or 0)))
        if len(parts) == 2 and parts[0] == 'control':
            with LOCK:
                CONNECTORS[parts[1]] = body
            return self._send(200, {'ok': True})
        return self._send(404, {'error': 'no route'})


def main():
    global AUTH
    ap = argparse.ArgumentParser()
    ap.add_argument('--port-file', required=True)
    ap.add_argument('--user')
    args = ap.parse_args()
    if args.user:
        AUTH = 'Basic ' + base64.b64encode(args.user.encode()).decode()
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    tmp = args.port_file + '.tmp'
    with open(tmp, 'w') as f:
        json.dump({'port': server.server_address[1]}, f)
    os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == '__main__':
    main()
