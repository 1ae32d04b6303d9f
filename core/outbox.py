"""A local mail sink for `loopllama dev`: `send_email` delivers to files, not the world.

With no LOOPLLAMA_SMTP_URL configured, the dev stack still lets the quick start's
approval send a real email over SMTP: to this server on 127.0.0.1, which writes each
message to `<data dir>/outbox/` as an .eml file.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _WriteToFolder:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        content = envelope.content
        raw = content if isinstance(content, bytes) else content.encode()
        (self._folder / f"{stamp}.eml").write_bytes(raw)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Outbox:
    """An SMTP server on 127.0.0.1 that files every message it receives."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self._controller = Controller(_WriteToFolder(folder), hostname="127.0.0.1",
                                      port=self.port)

    @property
    def url(self) -> str:
        """The LOOPLLAMA_SMTP_URL that reaches it."""
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving (in aiosmtpd's own thread)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller.start()

    def stop(self) -> None:
        """Stop serving."""
        self._controller.stop()
