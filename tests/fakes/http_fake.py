"""What the fake model APIs (`FakeAnthropic`, `FakeOpenAI`) share: their HTTP plumbing.

`FakeHttpServer` is the base of a fake: it serves a `ThreadingHTTPServer` on a background
thread (start/stop, context manager, `port`, `url`), keeps track of open connections so
that stop() drops them, and holds the FIFO script of replies, the default handler and the
recorded requests. `FakeHttpHandler` is the base of its request handler: HTTP/1.1 with
Nagle off, body reading, one-write answers, dropped connections.

Nothing is global: every piece of state lives on the fake instance.
"""

from __future__ import annotations

import http
import json
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

__all__ = [
    "STOP_POLL_SECONDS",
    "FakeHttpHandler",
    "FakeHttpServer",
    "Predicate",
    "RequestJSON",
    "parse_json_object",
    "when_matches",
]

RequestJSON = dict[str, Any]
Predicate = Callable[[RequestJSON], bool]
"""Decides whether a scripted reply may answer a request (given its parsed JSON body)."""

STOP_POLL_SECONDS = 0.05
"""How often waiting code (serve_forever, held replies) checks whether the fake stopped."""


class _Scripted(Protocol):
    def matches(self, request: RequestJSON) -> bool: ...


ReplyT = TypeVar("ReplyT", bound=_Scripted)
RecordT = TypeVar("RecordT")
FakeT = TypeVar("FakeT", bound="FakeHttpServer[Any, Any]")


def when_matches(when: Predicate | None, request: RequestJSON) -> bool:
    """Whether a reply with predicate `when` may answer `request`: always without one;
    a predicate that raises counts as "does not match"."""
    if when is None:
        return True
    try:
        return bool(when(request))
    except Exception:
        return False


def parse_json_object(raw: bytes) -> RequestJSON | None:
    """`raw` parsed as JSON if it is a JSON object, else None."""
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when many calls come at once.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[FakeHttpHandler[Any]],
        fake: FakeHttpServer[Any, Any],
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse-DNS getfqdn(), which can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, killed workers, stop()) are expected, not failures.
        if isinstance(sys.exc_info()[1], OSError) or self.fake._stopping.is_set():
            return
        super().handle_error(request, client_address)


class FakeHttpHandler(BaseHTTPRequestHandler, Generic[FakeT]):
    """Base request handler of a fake: `self.fake` is the `FakeHttpServer` it serves."""

    protocol_version = "HTTP/1.1"
    # With Nagle on, a response split over two segments waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    # Reason phrases for statuses http.HTTPStatus does not know (others get "Error").
    extra_reasons: ClassVar[dict[int, str]] = {}

    @property
    def fake(self) -> FakeT:
        return cast(FakeT, cast(_Server, self.server).fake)

    def setup(self) -> None:
        super().setup()
        self.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        self.fake._track_connection(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        """The request body, by content-length or chunked transfer encoding."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _lowered_headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _write_response(
        self, status: int, content_type: str, data: bytes, headers: Iterable[tuple[str, str]]
    ) -> None:
        """Send status line, headers and `data` in one write (see disable_nagle_algorithm)."""
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = self.extra_reasons.get(status, "Error")
        lines = [
            f"{self.protocol_version} {status} {reason}",
            f"content-type: {content_type}",
            f"content-length: {len(data)}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        if self.close_connection:
            lines.append("connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    def _drop_connection(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        _shut(self.connection)


class FakeHttpServer(Generic[ReplyT, RecordT]):
    """Base of a fake HTTP API on a background thread: lifecycle, script and recording.

    An instance serves once: after stop() it cannot be started again. The script is a FIFO
    of replies; a request takes the first one that `matches` its JSON body, else the
    default handler's reply. All methods are thread-safe.
    """

    def __init__(
        self,
        handler: type[FakeHttpHandler[Any]],
        *,
        label: str,
        url_path: str,
        host: str,
        port: int,
        fallback: Callable[[RequestJSON], ReplyT],
        default: Callable[[RequestJSON], ReplyT] | None,
    ) -> None:
        """`label` names the fake in errors and its thread, `url_path` ends its `url`;
        `fallback` is the default handler that set_default(None) restores."""
        self._handler = handler
        self._label = label
        self._url_path = url_path
        self._address = (host, port)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._script: list[ReplyT] = []
        self._records: list[RecordT] = []
        self._fallback = fallback
        self._default = default or fallback
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Bind and start serving on a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"{self._label} already started (instances serve once)")
        self._server = _Server(self._address, self._handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": STOP_POLL_SECONDS},
            name=f"fake-{self._label.removeprefix('Fake').lower()}-{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections, including calls being held or delayed.

        Idempotent. Calls still in flight fail on the client with a connection error.
        """
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port being served (only after start())."""
        if self._server is None:
            raise RuntimeError(f"{self._label} not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        """Base URL for the SDK: "http://HOST:PORT" and the API's path prefix, if it has one
        (e.g. "/v1"); available when `port` is."""
        return f"http://{self._address[0]}:{self.port}{self._url_path}"

    # ------------------------------------------------------------------------------ script

    def enqueue(self, reply: ReplyT) -> ReplyT:
        """Append `reply` to the script; returns it."""
        with self._lock:
            self._script.append(reply)
        return reply

    def set_default(self, handler: Callable[[RequestJSON], ReplyT] | None) -> None:
        """Answer unscripted requests with `handler(request_json)`; None restores echo_reply.

        If the handler raises, the request gets a 500 (the API's server error) naming the
        exception.
        """
        with self._lock:
            self._default = handler or self._fallback

    def pending(self) -> list[ReplyT]:
        """Scripted replies not yet served, in order."""
        with self._lock:
            return list(self._script)

    # --------------------------------------------------------------------------- recording

    @property
    def requests(self) -> list[RecordT]:
        """A snapshot of every request received so far (all paths, including rejected ones)."""
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        """Forget the script and the recorded requests (the default handler stays)."""
        with self._lock:
            self._script.clear()
            self._records.clear()

    # ---------------------------------------------------------------- used by the handler

    def _track_connection(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
        if add and self._stopping.is_set():
            _shut(connection)

    def _add_record(self, record: RecordT) -> None:
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()

    def _take_reply(self, body: RequestJSON) -> tuple[ReplyT, bool]:
        """The first scripted reply matching `body` (removed from the script), else the
        default handler's; and whether it came from the script."""
        with self._lock:
            for index, reply in enumerate(self._script):
                if reply.matches(body):
                    return self._script.pop(index), True
            handler = self._default
        return handler(body), False
