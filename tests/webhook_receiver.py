"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that checks the Standard
Webhooks signature of every POST with the secret keyturn showed once."""
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP server on 127.0.0.1 that verifies each POST's signature and answers `fail_first`
    requests with 503 before answering 204."""

    def __init__(self, fail_first: int = 0):
        self.secret = None
        self.fail_first = fail_first
        self.seen = []          # (headers, body, status answered)
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                ok = receiver.signature_ok(self.headers, body)
                receiver.bad_signatures += not ok
                status = 503 if len(receiver.seen) < receiver.fail_first else (204 if ok else 401)
                receiver.seen.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks?x=1"

    def signature_ok(self, headers, body: bytes) -> bool:
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
        return fresh and any(hmac.compare_digest(part.removeprefix("v1,"), expected)
                             for part in headers["webhook-signature"].split())

    def delivered(self) -> list[dict]:
        return [json.loads(body) for _, body, status in self.seen if status == 204]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
