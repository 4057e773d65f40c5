"""/healthz, /readyz and /metrics on one port, served from a daemon thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream import metrics


class Health:
    """Shared between the worker loop (writes) and the HTTP thread (reads)."""

    def __init__(self, stall_seconds: float = 60.0) -> None:
        self.stall_seconds = stall_seconds
        self.last_loop = time.monotonic()
        self.ready_check: Callable[[], tuple[bool, dict[str, Any]]] = lambda: (False, {})

    def beat(self) -> None:
        self.last_loop = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < self.stall_seconds


def serve(health: Health, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = health.alive()
                self._send(200 if ok else 503, json.dumps({"alive": ok}).encode())
            elif self.path == "/readyz":
                ok, detail = health.ready_check()
                self._send(200 if ok else 503, json.dumps({"ready": ok, **detail}).encode())
            elif self.path == "/metrics":
                metrics.ready.set(int(health.ready_check()[0]))
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b'{"error":"not found"}')

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
