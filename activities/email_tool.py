"""The `send_email` tool: real SMTP, configured on the worker."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from core.settings import Secret
from core.types import ToolCall, ToolResult

SMTP_UNAVAILABLE = "SmtpUnavailable"
SMTP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to deliver mail; the password never leaves the worker."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: Secret | None

    @classmethod
    def from_url(cls, url: Secret) -> SmtpConfig:
        """Parse `smtp://user:pass@host:587` or `smtps://user:pass@host:465`."""
        parts = urlsplit(url.value)
        implicit_tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (465 if implicit_tls else 587),
            implicit_tls=implicit_tls,
            username=unquote(parts.username) if parts.username else None,
            password=Secret(unquote(parts.password)) if parts.password else None,
        )


def message_id(call: ToolCall) -> str:
    """The same Message-ID for every attempt of one call: duplicates are recognisable."""
    digest = hashlib.sha256(call.idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@loopllama>"


class EmailTool:
    """Sends one email per activity."""

    def __init__(self, smtp: SmtpConfig | None, sender: str) -> None:
        self._smtp = smtp
        self._sender = sender

    @activity.defn(name="send_email")
    async def send(self, call: ToolCall) -> ToolResult:
        """Deliver the email the agent wrote (after any approval)."""
        if self._smtp is None:
            return ToolResult(
                content="send_email is not configured on this worker "
                "(LOOPLLAMA_SMTP_URL is unset); the email was not sent.",
                is_error=True,
            )
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = str(call.input["to"])
        message["Subject"] = str(call.input["subject"])
        message["Message-ID"] = message_id(call)
        message["X-LoopLlama-Idempotency-Key"] = call.idempotency_key
        message.set_content(str(call.input["body"]))
        try:
            async with heartbeating():
                await asyncio.to_thread(self._deliver, message)
        except smtplib.SMTPRecipientsRefused:
            return ToolResult(content=f"The mail server refused {message['To']}.", is_error=True)
        except smtplib.SMTPResponseException as err:
            if 500 <= err.smtp_code < 600:
                return ToolResult(
                    content=f"The mail server rejected the email ({err.smtp_code}).",
                    is_error=True,
                )
            raise ApplicationError(
                f"The mail server answered {err.smtp_code}", type=SMTP_UNAVAILABLE
            ) from None
        except (OSError, smtplib.SMTPException) as err:
            raise ApplicationError(
                f"Could not reach the mail server ({type(err).__name__})", type=SMTP_UNAVAILABLE
            ) from None
        return ToolResult(
            content=f"Email sent to {message['To']} (Message-ID {message['Message-ID']})."
        )

    def _deliver(self, message: EmailMessage) -> None:
        assert self._smtp is not None
        smtp = self._smtp
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if smtp.implicit_tls:
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_SECONDS,
                                      context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_SECONDS)
        with client:
            client.ehlo()
            if not smtp.implicit_tls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if smtp.username and smtp.password:
                client.login(smtp.username, smtp.password.value)
            client.send_message(message)
