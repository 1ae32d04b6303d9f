"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives.

Plain by default; it can also speak STARTTLS or implicit TLS (smtps) with a certificate
from `make_certificate`, accept logins (even in clear, so a test sees a client that
would send credentials unencrypted), and misbehave after accepting a message.
"""

from __future__ import annotations

import email
import ipaddress
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.conftest import free_port


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate and its key (PEM files), for test servers."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """What a server presents."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.cert_file))


def make_certificate(folder: Path, *names: str) -> Certificate:
    """A self-signed certificate for `names` (host names or IP addresses), by `openssl`."""
    folder.mkdir(parents=True, exist_ok=True)
    alt_names = ",".join(
        f"IP:{name}" if _is_address(name) else f"DNS:{name}" for name in names
    )
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={names[0]}",
         "-addext", f"subjectAltName={alt_names}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return Certificate(cert, key)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Login:
    """One AUTH the server received."""

    username: str
    password: str
    encrypted: bool


@dataclass
class Received:
    """One delivered email."""

    sender: str
    recipients: list[str]
    message: Message

    @property
    def message_id(self) -> str:
        """The Message-ID header."""
        return str(self.message["Message-ID"])

    @property
    def body(self) -> str:
        """The plain-text body."""
        payload = self.message.get_payload(decode=True)
        return payload.decode() if isinstance(payload, bytes) else str(payload)


class _Handler:
    def __init__(self, server: FakeSmtp) -> None:
        self._server = server

    async def handle_QUIT(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self._server.after_accept == "drop":
            smtp.transport.close()  # no answer at all: the connection just ends
        if self._server.after_accept == "quit_fails":
            return "421 4.3.0 Failing the goodbye on purpose"
        return "221 Bye"

    async def handle_RCPT(  # noqa: N802
        self, smtp: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self._server.pause_at("rcpt")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self._server.pause_at("data")
        content = envelope.content
        raw = content if isinstance(content, bytes) else content.encode()
        with self._server.lock:
            self._server.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos),
                         email.message_from_bytes(raw))
            )
        return "250 Message accepted for delivery"


class FakeSmtp:
    """`with FakeSmtp() as smtp:` then point LOOPLLAMA_SMTP_URL at `smtp.url`."""

    def __init__(
        self, *, tls: Literal["none", "starttls", "smtps"] = "none",
        certificate: Certificate | None = None, users: dict[str, str] | None = None,
        after_accept: Literal["quit", "quit_fails", "drop"] = "quit",
    ) -> None:
        """`tls`: what the server offers (needs `certificate` unless "none"). `users`:
        accepted logins; AUTH is then offered with or without TLS. `after_accept`: how the
        server answers QUIT once it accepted a message ("quit_fails": 421; "drop": closes
        the connection without a word)."""
        self.port = free_port()
        self.received: list[Received] = []
        self.logins: list[Login] = []
        self.connections = 0
        self.after_accept = after_accept
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()
        self.reached = threading.Event()
        self._hold_stage = ""
        self._tls = tls
        self._users = users
        options: dict[str, Any] = {}
        if tls != "none":
            assert certificate is not None, "a TLS server needs a certificate"
            options["ssl_context" if tls == "smtps" else "tls_context"] = (
                certificate.server_context()
            )
        if users is not None:
            options.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = _CountingController(
            self, _Handler(self), hostname="127.0.0.1", port=self.port, **options
        )

    @property
    def url(self) -> str:
        """An `smtp://` (or `smtps://`) URL without credentials."""
        scheme = "smtps" if self._tls == "smtps" else "smtp"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url_with_login(self, username: str, password: str) -> str:
        """The URL with credentials in it, as LOOPLLAMA_SMTP_URL carries them."""
        return self.url.replace("://", f"://{username}:{password}@", 1)

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        assert server.transport is not None
        login = Login(auth_data.login.decode(), auth_data.password.decode(),
                      encrypted=server.transport.get_extra_info("ssl_object") is not None)
        with self.lock:
            self.logins.append(login)
        users = self._users or {}
        # handled=False: aiosmtpd answers 235 or 535 itself.
        return AuthResult(success=users.get(login.username) == login.password, handled=False)

    def hold(self, stage: str) -> None:
        """Make deliveries wait at `stage` ("rcpt": before the message is sent; "data":
        after the whole message arrived, before the server confirms it) until
        `release.set()`. `reached` is set when a delivery gets there."""
        self._hold_stage = stage
        self.reached.clear()
        self.release.clear()

    def pause_at(self, stage: str) -> None:
        """Called by the handler at each stage; blocks while that stage is held.

        Blocking on purpose: aiosmtpd runs on its own thread, so only this server waits,
        which is what lets a test kill a worker in the middle of a delivery.
        """
        if stage == self._hold_stage:
            self.reached.set()
            self.release.wait(timeout=30)

    def messages(self) -> list[Received]:
        """A snapshot of what arrived."""
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, within: float = 20.0) -> list[Received]:
        """Block until `count` messages arrived (for use via asyncio.to_thread)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(self.messages()) >= count:
                return self.messages()
            time.sleep(0.02)
        raise AssertionError(f"expected {count} emails, got {len(self.messages())}")

    def __enter__(self) -> FakeSmtp:
        self._controller.start()
        with self.lock:
            self.connections = 0  # not counting the controller's own start-up probe
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._controller.stop()


class _CountingController(Controller):
    """Counts connections: one per delivery attempt."""

    def __init__(self, fake: FakeSmtp, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._fake = fake

    def factory(self) -> SMTP:
        with self._fake.lock:
            self._fake.connections += 1
        return super().factory()
