"""A local HTTP endpoint for custom tools: records calls, can fail or stall the first ones.

Plain HTTP by default; with a server TLS context it speaks https and records the SNI
name each connection asked for.
"""

from __future__ import annotations

import json
import ssl
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
    # How many of the next calls wait for `release` (or the server's end) before answering.
    stalls: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    server_names: list[str | None] = field(default_factory=list)
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
            stall = state.stalls > 0
            state.stalls -= 1 if stall else 0
        if stall:
            state.release.wait(timeout=30)
        payload = reply.encode()
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.wfile.write(head + payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


class ToolServer:
    """`with ToolServer() as tools:`; `tools.url("/crm")` is an endpoint."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.state = self.state  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._scheme = "https"
            tls.sni_callback = self._record_server_name
            # The handshake happens in the request's thread, not the accepting one.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on (on 127.0.0.1)."""
        return int(self._server.server_address[1])

    def url(self, path: str = "/tool", host: str = "127.0.0.1") -> str:
        """The endpoint URL for `path`; `host` names it (it listens on 127.0.0.1)."""
        return f"{self._scheme}://{host}:{self.port}{path}"

    def stall_next(self, count: int = 1) -> None:
        """Let the next `count` calls wait without answering until the server stops."""
        with self.state.lock:
            self.state.stalls += count

    def server_names(self) -> list[str | None]:
        """The SNI name of each TLS connection, in order."""
        with self.state.lock:
            return list(self.state.server_names)

    def _record_server_name(
        self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, context: ssl.SSLContext
    ) -> None:
        with self.state.lock:
            self.state.server_names.append(name)

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
        self.state.release.set()
        self._server.shutdown()
        self._server.server_close()
