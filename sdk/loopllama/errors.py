"""The errors the SDK raises.

Everything derives from `LoopLlamaError`. An HTTP error answer from the API becomes an
`APIStatusError` subclass chosen by status code, carrying the server's error `type` and
`message` (the envelope `{"error": {"type", "message"}}`), so callers can branch on the
class instead of on strings:

    LoopLlamaError
    ├── APIStatusError            any error answer; .status .type .message .body
    │   ├── BadRequestError           400  the request was malformed; nothing changed
    │   ├── AuthenticationError       401  missing or wrong API key
    │   ├── NotFoundError             404
    │   ├── ConflictError             409  e.g. workflow paused, run not waiting
    │   ├── RequestTooLargeError      413
    │   ├── RateLimitError            429  (retried automatically)
    │   ├── ServiceUnavailableError   503  Temporal unreachable (retried automatically)
    │   └── InternalServerError       other 5xx
    ├── APIConnectionError        no answer at all (refused, reset, DNS, ...)
    │   └── APITimeoutError           the answer did not arrive within `timeout`
    ├── APIResponseValidationError    a 2xx answer the SDK could not read
    └── PollTimeoutError          `runs.poll()` gave up; .run is the last run seen
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopllama.types import Run

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "LoopLlamaError",
    "NotFoundError",
    "PollTimeoutError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
]


class LoopLlamaError(Exception):
    """Base class of every error this SDK raises (also raised for bad configuration)."""


class APIStatusError(LoopLlamaError):
    """The API answered with an error status.

    Attributes:
        status: the HTTP status code.
        type: the server's error type, e.g. ``"invalid_request_error"``.
        message: the server's sentence saying what to change.
        body: the decoded JSON body (or the raw text when it was not JSON).
    """

    def __init__(self, status: int, type: str, message: str, body: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status}, {type})")
        self.status = status
        self.type = type
        self.message = message
        self.body = body

    @property
    def status_code(self) -> int:
        """Alias of `status`, as in httpx."""
        return self.status


class BadRequestError(APIStatusError):
    """400: the request is invalid (the message names the field); nothing changed."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or not one the server accepts."""


class NotFoundError(APIStatusError):
    """404: no workflow or run with that id (or no such route)."""


class ConflictError(APIStatusError):
    """409: the resource's state does not allow this (paused workflow, run not waiting)."""


class RequestTooLargeError(APIStatusError):
    """413: the request body is over the server's limit (1 MiB)."""


class RateLimitError(APIStatusError):
    """429: too many requests; raised once the SDK's retries are used up."""


class ServiceUnavailableError(APIStatusError):
    """503: the server cannot reach Temporal; raised once the SDK's retries are used up."""


class InternalServerError(APIStatusError):
    """Any 5xx other than 503."""


class APIConnectionError(LoopLlamaError):
    """No HTTP answer was received: connection refused or reset, DNS failure, ...."""

    def __init__(self, message: str = "Could not connect to the LoopLlama API.") -> None:
        super().__init__(message)
        self.message = message


class APITimeoutError(APIConnectionError):
    """The request did not complete within the client's `timeout`."""


class APIResponseValidationError(LoopLlamaError):
    """A successful answer whose body the SDK could not read (not the documented shape)."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body


class PollTimeoutError(LoopLlamaError):
    """`runs.poll()` reached its timeout before the run finished.

    Attributes:
        run: the last run the poll saw (its status says where it stood).
        timeout: the timeout, in seconds, that elapsed.
    """

    def __init__(self, run: Run, timeout: float) -> None:
        super().__init__(
            f"Run {run.id} was still {run.status!r} after {timeout:g}s of polling. "
            "Poll again to keep waiting; the run itself goes on."
        )
        self.run = run
        self.timeout = timeout


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_class_for(status: int) -> type[APIStatusError]:
    """The `APIStatusError` subclass for an HTTP status code."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return InternalServerError
    return APIStatusError
