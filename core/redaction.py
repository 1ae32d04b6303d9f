"""Keeping secrets out of text that leaves a process: log lines, and provider errors
before they become a run's `error`, its events and its webhooks.

`redact` replaces every configured secret (`secret_values`: API keys, the Anthropic key,
the webhook and encryption keys, the SMTP URL and its password) and anything shaped like
a credential, configured or not, because a model endpoint may repeat a key it was sent
or one of its own: `Bearer <token>`, `sk-…` and `sk-ant-…` keys, the value of an
`x-api-key:`/`Authorization:`/`api_key=`/`password=` field, a long token after "key",
"token" or "secret", the password of a URL. The label stays, so the text still says what
was there: `Authorization: Bearer [redacted]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from core.settings import Secret, Settings

REDACTED = "[redacted]"
# Shorter "secrets" would redact ordinary words; no real key is this short.
_MIN_REDACTED_LENGTH = 8

# What a token is made of (base64, base64url, hex, JWT dots), and `[redacted]` itself,
# which must not be taken for one.
_TOKEN = r"(?!\[redacted\])[A-Za-z0-9+/_.~-]"
# `Bearer <token>`, `Basic <base64>` and `Token <token>`, wherever they appear (a header
# echoed in a message); after "Basic" and "Token" only what looks like a credential (a
# digit, padding, or 24 or more characters), so "basic authentication" stays.
_SCHEME = re.compile(
    rf"(?i)\b(bearer|(?:basic|token)(?=\s+(?:{_TOKEN}*[\d=]|{_TOKEN}{{24}})))"
    rf"(\s+)({_TOKEN}{{8,}}=*)")
# Keys whose shape says what they are: Anthropic's and OpenAI's `sk-`/`sk-ant-` keys.
_KEY_SHAPES = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")
# A field whose value is a credential, whatever it looks like: `x-api-key: abc`,
# `"api_key": "abc"`, `password=abc`, `Authorization: abc` (a scheme is handled above).
_FIELD = re.compile(
    r"(?i)\b(x-api-key|api[-_]?key|access[-_]?token|auth[-_]?token|refresh[-_]?token"
    r"|client[-_]?secret|authorization|password|passwd)"
    r"(\"?'?\s*[:=]\s*\"?'?)"
    rf"(?!(?:bearer|basic|token)\s)({_TOKEN}+=*)"
)
# A long token (16+ characters with a digit: words are not redacted) after "key",
# "token" or "secret", e.g. "invalid key 3f9a…", "token=eyJ…", "secret: 'AbC1…'"; not
# an Idempotency-Key, which is a call's place in a run.
_AFTER_WORD = re.compile(
    r"(?i)(?<!idempotency-)(?<!idempotency_)(?<!idempotency )"
    r"\b(keys?|tokens?|secrets?|credentials?)\b(\W{0,3})"
    rf"(?=[^\s\"'`,;]*\d)({_TOKEN}{{16,}}=*)"
)
# The password of a URL: `smtp://user:password@host`.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)([^\s/@]+)(@)", re.IGNORECASE)


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every configured secret string that must never reach a log line or a response."""
    found: list[Secret] = [*settings.api_keys]
    found += [s for s in (settings.anthropic_api_key, settings.openai_api_key,
                          settings.webhook_key) if s is not None]
    found += [p.api_key for p in settings.providers if p.api_key is not None]
    found += settings.encryption_keys
    values = [secret.value for secret in found]
    if settings.smtp_url is not None:
        values.append(settings.smtp_url.value)
        password = urlsplit(settings.smtp_url.value).password
        if password:
            values.append(password)
    # Longest first, so a secret containing another is redacted whole.
    return longest_first(values)


def without_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret in `secrets` (longest first, as `secret_values` gives
    them) replaced by `[redacted]`, and nothing else changed: for text that is not an
    error, such as a tool's answer, where a credential's shape may be content."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def longest_first(values: Iterable[str]) -> tuple[str, ...]:
    """Secret values as `redact` takes them: long enough to be secrets, longest first."""
    return tuple(sorted({v for v in values if len(v) >= _MIN_REDACTED_LENGTH},
                        key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret in `secrets` (longest first, as `secret_values` gives
    them) and everything shaped like a credential replaced by `[redacted]`."""
    text = without_secrets(text, secrets)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}\3", text)
    text = _SCHEME.sub(rf"\1\2{REDACTED}", text)
    text = _FIELD.sub(rf"\1\2{REDACTED}", text)
    text = _AFTER_WORD.sub(rf"\1\2{REDACTED}", text)
    return _KEY_SHAPES.sub(REDACTED, text)
