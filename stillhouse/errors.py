"""What the Python client raises: one base class that carries the API's `error` code, its
`detail` sentence and the HTTP status, and a subclass per case a script may want to catch."""

from __future__ import annotations

from typing import Any


class StillhouseError(Exception):
    """An API call that did not succeed. `str(exc)` is the sentence for a person."""

    def __init__(
        self, detail: str, *, error: str = "error", status: int | None = None, url: str = ""
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error = error  # the API's machine code, e.g. "not_found", "invalid_request"
        self.status = status  # the HTTP status, None when no answer came
        self.url = url


class AuthError(StillhouseError):
    """401: no API key, or one the service does not accept (unknown, revoked)."""


class NotFound(StillhouseError):
    """404: no such resource for this API key."""


class Conflict(StillhouseError):
    """409: the resource's state does not allow this (e.g. the job has no report yet)."""


class InvalidRequest(StillhouseError):
    """400, 413, 415, 422: the request itself is wrong; `detail` says which field and why."""


class Unavailable(StillhouseError):
    """502, 503, 504: the service or a worker could not serve it now; retry later."""


class ConnectionFailed(StillhouseError):
    """No HTTP answer at all: the service is not running at that URL, or is unreachable."""


class WaitTimeout(StillhouseError):
    """`Client.wait` ran out of time before the job finished."""


_BY_STATUS: dict[int, type[StillhouseError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    400: InvalidRequest,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def from_response(status: int, body: Any, text: str, url: str) -> StillhouseError:
    """The exception for an error answer: the API's {"error", "detail"} when the body is
    one, else the status and the start of the body (a proxy's HTML page, say)."""
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        error, detail = str(body.get("error") or "error"), body["detail"]
    else:
        error = "http_error"
        snippet = " ".join(text.split())[:200]
        detail = f"{url} answered HTTP {status}" + (f": {snippet}" if snippet else ".")
    kind = _BY_STATUS.get(status, StillhouseError)
    return kind(detail, error=error, status=status, url=url)
