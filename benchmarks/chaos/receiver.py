"""A webhook receiver on loopback that records every notification it is sent (its delivery
key, the job's namespace, when, whether its signature verifies) and answers 200; run in a
thread of the harness. It verifies as docs/notifications.md tells receivers to: HMAC-SHA256
of "<X-VideoQueue-Timestamp>.<raw body>" with the queue's Secret, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks.chaos.audit import Delivery, delivery_key

DELIVERY_HEADER = "X-VideoQueue-Delivery"
TIMESTAMP_HEADER = "X-VideoQueue-Timestamp"
SIGNATURE_HEADER = "X-VideoQueue-Signature"


def signature_valid(
    secret: bytes | None, timestamp: str | None, body: bytes, given: str | None
) -> bool:
    """Whether `given` ("sha256=<hex>") signs `timestamp` and `body` with `secret`."""
    if secret is None or timestamp is None or given is None:
        return False
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given, f"sha256={digest}")


class Receiver:
    def __init__(self, secret: bytes | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body: dict[str, Any] = json.loads(raw or b"{}")
                key = delivery_key(self.headers.get(DELIVERY_HEADER), body)
                signed = signature_valid(
                    secret,
                    self.headers.get(TIMESTAMP_HEADER),
                    raw,
                    self.headers.get(SIGNATURE_HEADER),
                )
                namespace = str(body.get("namespace"))
                receiver._record(Delivery(key, namespace, time.time(), signed))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:  # one line per request is noise here
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)

    def of(self, namespace: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.namespace == namespace]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
