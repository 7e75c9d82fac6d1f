"""One small HTTP server for operators: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready).

A daemon thread with the standard library's server: nothing here is on the
record path, and a scrape never blocks the pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from application.health import HealthState

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


class OperationsServer:
    def __init__(self, port: int, health: HealthState, registry: CollectorRegistry, host: str = "0.0.0.0") -> None:
        self._health = health
        self._registry = registry
        handler = self._handler_class()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="operations-http", daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == METRICS_PATH:
                    self._reply(200, generate_latest(server._registry), CONTENT_TYPE_LATEST)
                elif path == LIVENESS_PATH:
                    alive = server._health.alive()
                    self._json(200 if alive else 503, {"alive": alive})
                elif path == READINESS_PATH:
                    readiness = server._health.readiness()
                    self._json(200 if readiness.ready else 503, {"ready": readiness.ready, "reason": readiness.reason})
                else:
                    self._json(404, {"error": "not found", "paths": [METRICS_PATH, LIVENESS_PATH, READINESS_PATH]})

            def _json(self, status: int, body: dict[str, object]) -> None:
                self._reply(status, json.dumps(body).encode(), "application/json")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        return Handler

    def start(self) -> OperationsServer:
        self._thread.start()
        log.info("serving %s, %s and %s on port %d", METRICS_PATH, LIVENESS_PATH, READINESS_PATH, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
