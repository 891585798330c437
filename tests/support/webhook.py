#!/usr/bin/python3
"""webhook.py - a local stand-in for a Slack incoming webhook, a generic JSON
webhook, PagerDuty's Events API v2 and a heartbeat URL, for tests and demos.

    /usr/bin/python3 tests/support/webhook.py --port-file PATH [--print]

Listens on 127.0.0.1 on a free port and, once listening, writes
{"port": N, "pid": P} to PATH atomically. Stops on SIGTERM or SIGINT at
once, even while a scripted "hang" is in progress.

Deliveries: any POST or GET to a path outside /control/ is recorded as
{"n", "time", "method", "path", "body", "raw", "content_type", "status"} and
answered from the script (default: 200 "ok", as Slack does; under
/v2/enqueue, 202 with {"status": "success", "message": "Event processed",
"dedup_key": ...}, as PagerDuty's Events API v2 does). "body" is the parsed
JSON, or the raw text when it is not JSON; "raw" is always the text; "time"
is Unix seconds (float) when the request arrived; "status" is the status
the script chose for it.

Control (JSON in and out):
    POST /control/script   {"responses": [{"status": 500},
                                          {"status": 429, "retry_after": 1},
                                          {"hang": 30},
                                          {"status": 400, "body": "no_text"}],
                            "then": 200}
        each delivery takes the next response; "hang": seconds to wait
        before answering (with "status", default 200 or 202 as above); "retry_after": a
        Retry-After header in seconds, as given; "retry_after_date": a
        Retry-After header as an HTTP-date (IMF-fixdate, "Sun, 06 Nov 1994
        08:49:37 GMT") that many seconds from now, rounded up to the whole
        second (negative: in the past); after the list, "then" (default 200,
        202 under /v2/enqueue) answers every delivery, and "then_hang"
        (seconds) makes each of those hang first.
    GET  /control/received  the list of recorded deliveries, oldest first
    POST /control/reset     forget the script and the deliveries

--print writes each delivery readably to stdout: its "text" and the texts
of its blocks (and attachments).

Standard library only.
"""

import argparse
import email.utils
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Slack's own replies: a word, as text/plain.
DEFAULT_REPLIES = {
    200: "ok",
    400: "invalid_payload",
    403: "invalid_token",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
MAX_BODY = 4 * 1024 * 1024


class State:
    """What the server remembers; every access holds the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # ends hangs at shutdown
        self.print_messages = False
        self.reset()

    def reset(self):
        self.responses = []
        self.then = None
        self.then_hang = 0
        self.received = []

    def next_response(self):
        if self.responses:
            return self.responses.pop(0)
        response = {"hang": self.then_hang}
        if self.then is not None:
            response["status"] = self.then
        return response


def is_pagerduty(path):
    return path.startswith("/v2/enqueue")


STATE = State()


def block_texts(block):
    """The texts shown by one Block Kit block (section, header, context, ...)."""
    out = []
    text = block.get("text")
    if isinstance(text, dict) and isinstance(text.get("text"), str):
        out.append(text["text"])
    elif isinstance(text, str):
        out.append(text)
    for key in ("fields", "elements"):
        for item in block.get(key) or []:
            if isinstance(item, dict):
                if isinstance(item.get("text"), str):
                    out.append(item["text"])
                elif isinstance(item.get("text"), dict):
                    out.extend(block_texts(item))
                elif isinstance(item.get("elements"), list):
                    out.extend(block_texts(item))
    return out


def readable(record):
    """A delivery as a few lines for a person watching a terminal."""
    when = time.strftime("%H:%M:%S", time.localtime(record["time"]))
    lines = ["--- Slack message #%d at %s (answered %d)" %
             (record["n"], when, record["status"])]
    body = record["body"]
    if not isinstance(body, dict):
        lines.append(str(body))
        return "\n".join(lines)
    if isinstance(body.get("text"), str):
        lines.append(body["text"])
    parts = [body] + [a for a in body.get("attachments") or []
                      if isinstance(a, dict)]
    for part in parts:
        if part is not body and isinstance(part.get("text"), str):
            lines.append(part["text"])
        for block in part.get("blocks") or []:
            if isinstance(block, dict):
                for text in block_texts(block):
                    lines.extend("  | " + line for line in text.splitlines())
    return "\n".join(lines)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Slack: curl reuses it
    server_version = "webhook.py"

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle
        # and the client's delayed ACK add 40 ms to some replies.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass  # deliveries are recorded (and printed with --print) instead

    def reply(self, status, body, content_type="text/plain", headers=None):
        data = body.encode() if isinstance(body, str) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout or stop): nothing to answer

    def reply_json(self, status, obj):
        self.reply(status, json.dumps(obj), "application/json")

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        if self.path == "/control/received":
            with STATE.lock:
                received = list(STATE.received)
            self.reply_json(200, received)
        elif not self.path.startswith("/control/"):
            self.delivery(time.time(), b"")
        else:
            self.reply_json(404, {"error": "no such endpoint"})

    def do_POST(self):
        arrived = time.time()
        try:
            raw = self.read_body()
        except ValueError as e:
            self.reply_json(413, {"error": str(e)})
            return
        if self.path == "/control/script":
            self.script(raw)
        elif self.path == "/control/reset":
            with STATE.lock:
                STATE.reset()
            self.reply_json(200, {"ok": True})
        elif not self.path.startswith("/control/"):
            self.delivery(arrived, raw)
        else:
            self.reply_json(404, {"error": "no such endpoint"})

    def script(self, raw):
        try:
            doc = json.loads(raw or b"{}")
            responses = doc.get("responses", [])
            then = doc.get("then")
            then = None if then is None else int(then)
            then_hang = float(doc.get("then_hang", 0))
            if not isinstance(responses, list) or not all(
                    isinstance(r, dict) for r in responses):
                raise ValueError("responses must be a list of objects")
        except (ValueError, TypeError, AttributeError) as e:
            self.reply_json(400, {"error": str(e)})
            return
        with STATE.lock:
            STATE.responses = list(responses)
            STATE.then = then
            STATE.then_hang = then_hang
        self.reply_json(200, {"ok": True, "responses": len(responses)})

    def delivery(self, arrived, raw):
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        pagerduty = is_pagerduty(self.path)
        with STATE.lock:
            response = STATE.next_response()
            status = int(response.get("status", 202 if pagerduty else 200))
            record = {
                "n": len(STATE.received) + 1,
                "time": arrived,
                "method": self.command,
                "path": self.path,
                "body": body,
                "raw": text,
                "content_type": self.headers.get("Content-Type", ""),
                "status": status,
            }
            STATE.received.append(record)
        if STATE.print_messages:
            print(readable(record), flush=True)
        hang = float(response.get("hang", 0) or 0)
        if hang > 0 and STATE.stopping.wait(hang):
            return  # shutting down: never answer
        headers = {}
        if "retry_after" in response:
            headers["Retry-After"] = str(response["retry_after"])
        if "retry_after_date" in response:
            when = math.ceil(time.time() + float(response["retry_after_date"]))
            headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
        if pagerduty and "body" not in response and 200 <= status < 300:
            dedup = body.get("dedup_key") if isinstance(body, dict) else None
            self.reply(status, json.dumps({"status": "success",
                                           "message": "Event processed",
                                           "dedup_key": dedup}),
                       "application/json", headers)
            return
        body_out = response.get("body", DEFAULT_REPLIES.get(status, "error"))
        self.reply(status, body_out, headers=headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True    # a hanging handler must not keep us alive
    block_on_close = False
    allow_reuse_address = True


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump({"port": port, "pid": os.getpid()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True,
                        help='where to write {"port": N, "pid": P}')
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on (default: a free one)")
    parser.add_argument("--print", dest="print_messages", action="store_true",
                        help="print each received message to stdout")
    args = parser.parse_args()
    STATE.print_messages = args.print_messages

    server = Server(("127.0.0.1", args.port), Handler)
    done = threading.Event()

    def on_signal(signum, frame):
        STATE.stopping.set()
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    write_port_file(args.port_file, server.server_address[1])
    while not done.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
