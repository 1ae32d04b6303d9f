"""A webhook receiver on 127.0.0.1: records every delivery, can fail the first ones."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    """One request the receiver got, with the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int
    received_at: float  # time.time() when it arrived


@dataclass
class _State:
    deliveries: list[Delivery] = field(default_factory=list)
    # Statuses for the next requests, in order; afterwards 204.
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with state.lock:
            status = state.statuses.pop(0) if state.statuses else 204
            state.deliveries.append(
                Delivery({k.lower(): v for k, v in self.headers.items()}, body, status,
                         time.time()))
        self.wfile.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())


class WebhookReceiver:
    """`with WebhookReceiver() as receiver:`; `receiver.url` takes deliveries."""

    def __init__(self) -> None:
        self.state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.state = self.state  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where to send deliveries."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def fail_next(self, *statuses: int) -> None:
        """Answer the next deliveries with these statuses."""
        with self.state.lock:
            self.state.statuses.extend(statuses)

    def deliveries(self) -> list[Delivery]:
        """A snapshot of what arrived."""
        with self.state.lock:
            return list(self.state.deliveries)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
