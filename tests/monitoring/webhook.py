"""A local webhook receiver for tests: an HTTP server on 127.0.0.1 recording the JSON bodies posted
to it (and answering 503 to the first ``fail_next`` posts, to test retries)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer


@dataclass
class Receiver:
    url: str
    bodies: list[dict] = field(default_factory=list)
    fail_next: int = 0


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """Serve a receiver in a thread for the duration of the block."""
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if receiver.fail_next:
                receiver.fail_next -= 1
                self.send_response(503)
            else:
                receiver.bodies.append(body)
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
