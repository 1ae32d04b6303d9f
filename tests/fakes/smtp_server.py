"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives."""

from __future__ import annotations

import email
import threading
import time
from dataclasses import dataclass
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import free_port


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

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()
        self.reached = threading.Event()
        self._hold_stage = ""
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        """An `smtp://` URL with credentials the server ignores (none are required)."""
        return f"smtp://127.0.0.1:{self.port}"

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
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._controller.stop()
