"""The `send_email` tool: real SMTP, configured on the worker.

Three rules keep it safe to hand to a model:

- Every header value is one line of text, and the recipient one plain address. A line
  break of any kind (CR, LF, U+2028, ... - whatever `str.splitlines` splits on), a
  trailing one included, and every other control character (NUL, DEL, C1, bidirectional
  overrides) is refused before anything is sent: it would forge headers, cut them short
  or show the approver something else. The run refuses such input before it asks anyone
  to approve it (`core/tools.py`, whose rules these are); the tool checks again, and
  checks the message it built: exactly one To address, the one given, and the same one
  alone on the envelope.
- SMTP credentials travel only over TLS: with a password configured, the connection must
  be `smtps://` or upgraded by a successful STARTTLS, or nothing is sent.
- Once the server has accepted the message (the final 250 to DATA), the email counts as
  delivered: a failure saying goodbye (QUIT) is logged, never retried into a duplicate.
"""

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
from core.contract import SEND_EMAIL
from core.settings import Secret
from core.tools import LINE_BREAKS, control_character_in, email_problem
from core.types import ToolCall, ToolResult

__all__ = ["LINE_BREAKS", "EmailTool", "Refused", "SmtpConfig", "build_message"]

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


class Refused(Exception):
    """The email must not be sent as configured or written; the message says why.

    Goes back to the agent as an error result: retrying cannot change the answer.
    """


def build_message(sender: str, call: ToolCall) -> EmailMessage:
    """The email for `call`, from `sender`; raises `Refused` for anything unsafe to send.

    Pure, so the rules can be tested without a mail server.
    """
    if found := control_character_in(sender):
        raise Refused(f"Refused: LOOPLLAMA_SMTP_FROM contains {found}; email header values "
                      "must be a single line of text.")
    to, subject, body = (str(call.input[key]) for key in ("to", "subject", "body"))
    if problem := email_problem({"to": to, "subject": subject, "body": body}):
        raise Refused(f"Refused: {problem}.")
    headers = {
        "From": sender,
        "To": to,
        "Subject": subject,
        "Message-ID": message_id(call),
        "X-LoopLlama-Idempotency-Key": call.idempotency_key,
    }
    message = EmailMessage()
    for name, value in headers.items():
        message[name] = value
    message.set_content(body)
    # What the message says, read back as a mail program reads it.
    for name, value in message.items():
        if found := control_character_in(str(value)):
            raise Refused(f"Refused: the {name} header contains {found}; email header "
                          "values must be a single line of text.")
    addresses = message["To"].addresses
    if [(a.display_name, a.addr_spec) for a in addresses] != [("", to)]:
        raise Refused(f"Refused: the recipient does not read back as the one address {to!r}; "
                      "give one plain address, like name@example.com.")
    return message


class EmailTool:
    """Sends one email per activity."""

    def __init__(self, smtp: SmtpConfig | None, sender: str, *,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self._smtp = smtp
        self._sender = sender
        # One context per worker; tests pass one that trusts their own certificate.
        self._tls = tls_context or (ssl.create_default_context() if smtp else None)

    @activity.defn(name=SEND_EMAIL)
    async def send(self, call: ToolCall) -> ToolResult:
        """Deliver the email the agent wrote (after any approval)."""
        if self._smtp is None:
            return ToolResult(
                content="send_email is not configured on this worker "
                "(LOOPLLAMA_SMTP_URL is unset); the email was not sent.",
                is_error=True,
            )
        try:
            message = build_message(self._sender, call)
        except Refused as refused:
            return ToolResult(content=f"{refused} The email was not sent.", is_error=True)
        to = str(call.input["to"])
        try:
            async with heartbeating():
                await asyncio.to_thread(self._deliver, message, to)
        except Refused as refused:
            activity.logger.warning("send_email refused: %s", refused)
            return ToolResult(content=f"{refused} The email was not sent.", is_error=True)
        except smtplib.SMTPRecipientsRefused:
            return ToolResult(content=f"The mail server refused {to}.", is_error=True)
        except smtplib.SMTPAuthenticationError as err:
            return ToolResult(
                content=f"The mail server refused the worker's SMTP credentials "
                f"({err.smtp_code}); check LOOPLLAMA_SMTP_URL. The email was not sent.",
                is_error=True,
            )
        except smtplib.SMTPResponseException as err:
            if 500 <= err.smtp_code < 600:
                return ToolResult(
                    content=f"The mail server rejected the email ({err.smtp_code}).",
                    is_error=True,
                )
            raise ApplicationError(
                f"The mail server answered {err.smtp_code}", type=SMTP_UNAVAILABLE
            ) from None
        except smtplib.SMTPNotSupportedError as err:
            # E.g. AUTH not offered, or a non-ASCII address without SMTPUTF8: no retry helps.
            return ToolResult(
                content=f"The mail server does not support what this email needs ({err}). "
                "The email was not sent.",
                is_error=True,
            )
        except ssl.SSLCertVerificationError as err:
            return ToolResult(
                content=f"The mail server's TLS certificate could not be verified "
                f"({err.verify_message}). The email was not sent.",
                is_error=True,
            )
        except (OSError, smtplib.SMTPException) as err:
            raise ApplicationError(
                f"Could not reach the mail server ({type(err).__name__})", type=SMTP_UNAVAILABLE
            ) from None
        return ToolResult(content=f"Email sent to {to} (Message-ID {message['Message-ID']}).")

    def _deliver(self, message: EmailMessage, to: str) -> None:
        assert self._smtp is not None and self._tls is not None
        smtp = self._smtp
        client: smtplib.SMTP
        if smtp.implicit_tls:
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_SECONDS,
                                      context=self._tls)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_SECONDS)
        try:
            client.ehlo()
            encrypted = smtp.implicit_tls
            if not encrypted and client.has_extn("starttls"):
                # Raises unless the upgrade succeeds: no fallback to plain text.
                try:
                    client.starttls(context=self._tls)
                except smtplib.SMTPResponseException as err:
                    if 500 <= err.smtp_code < 600:
                        raise Refused(
                            f"The mail server {smtp.host}:{smtp.port} offers STARTTLS but "
                            f"refused to start it ({err.smtp_code})."
                        ) from None
                    raise
                client.ehlo()
                encrypted = True
            if smtp.password is not None:
                if not encrypted:
                    raise Refused(
                        f"The mail server {smtp.host}:{smtp.port} does not offer STARTTLS, and "
                        "the worker sends SMTP credentials only over TLS: use an smtps:// "
                        "LOOPLLAMA_SMTP_URL or a server that supports STARTTLS."
                    )
                if smtp.username:
                    client.login(smtp.username, smtp.password.value)
            # The envelope is exactly the approved recipient, whatever the header parses to.
            client.send_message(message, from_addr=self._sender, to_addrs=[to])
        except BaseException:
            client.close()
            raise
        # The server accepted the message: it is delivered. A failing goodbye must not
        # turn into a retry, which would send it again.
        try:
            client.quit()
        except (OSError, smtplib.SMTPException) as err:
            activity.logger.info(
                "Email %s accepted; closing the SMTP session failed (%s)",
                message["Message-ID"], type(err).__name__,
            )
        finally:
            client.close()
