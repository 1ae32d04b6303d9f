"""The one timestamp format of the API: ISO 8601, UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def format_timestamp(value: datetime) -> str:
    """`2026-05-20T17:10:00.000Z` for any aware or naive-UTC datetime."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def truncate_to_millis(value: datetime) -> datetime:
    """Drop sub-millisecond precision so stored and shown times agree."""
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)
