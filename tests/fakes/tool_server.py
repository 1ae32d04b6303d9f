"""A local HTTP endpoint for custom tools: records calls, can fail the first ones."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ToolRequest:
    """One call the endpoint received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _State:
    requests: list[ToolRequest] = field(default_factory=list)
    # Status codes for the next calls, in order; afterwards 200.
    statuses: list[int] = field(default_factory=list)
    reply: str = '{"ok": true}'
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    # Without this, the body waits for the client's delayed ACK (~40 ms a call).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with state.lock:
            state.requests.append(ToolRequest(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            ))
            status = state.statuses.pop(0) if state.statuses else 200
            reply = state.reply if status < 400 else '{"error": "failing on purpose"}'
        payload = reply.encode()
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.wfile.write(head + payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


class ToolServer:
    """`with ToolServer() as tools:`; `tools.url("/crm")` is an endpoint."""

    def __init__(self) -> None:
        self.state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.state = self.state  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/tool") -> str:
        """The endpoint URL for `path`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def fail_next(self, *statuses: int) -> None:
        """Answer the next calls with these statuses."""
        with self.state.lock:
            self.state.statuses.extend(statuses)

    def requests(self) -> list[ToolRequest]:
        """A snapshot of the calls received."""
        with self.state.lock:
            return list(self.state.requests)

    def __enter__(self) -> ToolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
