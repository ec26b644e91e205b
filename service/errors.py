"""One error base class carrying its status code and a sentence for the user;
one set of handlers renders every error as {"error": code, "detail": sentence},
and `responses()` declares those same bodies in the OpenAPI document."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("stillhouse.api")

# Seconds a client should wait before retrying after a 503: long enough for a
# database failover or restart to make progress, short enough to feel live.
RETRY_AFTER_S = 5
UNAVAILABLE_SENTENCE = (
    "Stillhouse cannot reach its database right now; retry in a few seconds "
    "(with the same Idempotency-Key, if the request creates something)."
)


class ErrorBody(BaseModel):
    """Every error response: a stable machine code and a sentence for a person."""

    error: str
    detail: str


class StillhouseError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(StillhouseError):
    status_code = 401
    code = "unauthorized"


class NotFound(StillhouseError):
    status_code = 404
    code = "not_found"

    @classmethod
    def of(cls, kind: str, resource_id: str) -> NotFound:
        return cls(f"No {kind} with id '{shown(resource_id)}' exists for this API key.")


class Conflict(StillhouseError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(StillhouseError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(StillhouseError):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(StillhouseError):
    status_code = 422
    code = "invalid_request"


class ServiceUnavailable(StillhouseError):
    status_code = 503
    code = "unavailable"


class BadGateway(StillhouseError):
    status_code = 502
    code = "worker_failed"


class GatewayTimeout(StillhouseError):
    status_code = 504
    code = "timeout"


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"


_DESCRIPTIONS = {
    400: "The request could not be read.",
    401: "No API key, or one that is not valid.",
    404: "No such resource for this API key (ids that are not well formed included).",
    409: "The resource is in a state that does not allow this.",
    413: "The body is larger than this server accepts.",
    415: "The uploaded file's format is not accepted.",
    422: "The request is invalid; `detail` says which field and why.",
    502: "The worker failed while serving the request; `detail` says so in a sentence.",
    503: "The database or the broker is unreachable; retry after `Retry-After` seconds.",
    504: "No worker answered within the request's timeout.",
}


# What each status's body looks like, for the document's examples: a sentence of the kind
# the route really writes (a route may pass its own with `details`).
_EXAMPLES = {
    400: ("http_error", "There was an error parsing the body"),
    401: ("unauthorized", "Send your API key as 'Authorization: Bearer <key>'."),
    404: (
        "not_found",
        "No job with id '3f1c9a52-8d0e-4b7a-9c61-2e5d4f7a8b90' exists for this API key.",
    ),
    409: ("conflict", "The resource is in a state that does not allow this."),
    413: ("payload_too_large", "The request body is larger than this server's limit."),
    415: (
        "unsupported_media_type",
        "Stillhouse cannot read 'teacher.h5'; upload .onnx (ONNX) or .safetensors with a zoo spec.",
    ),
    422: (
        "invalid_request",
        "The request is invalid: losses.0.weight: Input should be a valid number.",
    ),
    502: (
        "worker_failed",
        "The worker failed while running the model; the error is in its log. Retry, and report "
        "it if it persists.",
    ),
    503: ("unavailable", UNAVAILABLE_SENTENCE),
    504: (
        "timeout",
        "No worker of pool 'cpu' answered within 30 s; start a worker for that pool, or retry "
        "with a longer timeout_s.",
    ),
}


def responses(
    *codes: int, details: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of error responses, all with the one ErrorBody schema and an
    example body; `details` gives a route's own sentence for a status.
    Declaring 422 here also keeps FastAPI from advertising its own validation array."""
    declared: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        error, detail = _EXAMPLES[code]
        detail = (details or {}).get(code, detail)
        entry: dict[str, Any] = {
            "model": ErrorBody,
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"example": {"error": error, "detail": detail}}},
        }
        if code == 503:
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            }
        declared[code] = entry
    return declared


def shown(value: str, limit: int = 80) -> str:
    """A user-sent value fit to quote in a sentence: control characters escaped, cut short."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value[:limit])
    return text + ("…" if len(value) > limit else "")


ASYNCPG_OUTAGES = {
    "PostgresConnectionError",  # CannotConnectNowError (a server starting or stopping) and kin
    "InterfaceError",  # ConnectionDoesNotExistError: the connection died mid-query
    "TooManyConnectionsError",
}


def is_outage(exc: BaseException) -> bool:
    """True for a lost or refused connection to the database; False for a bug (bad SQL,
    a constraint), which must stay a 500 so that it is seen and fixed."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or (exc.orig is not None and is_outage(exc.orig))
    if isinstance(exc, OSError):  # ConnectionRefusedError, TimeoutError, a DNS failure
        return True
    module = type(exc).__module__
    # asyncpg's connection errors, raised before SQLAlchemy can wrap them.
    return module.startswith("asyncpg") and any(
        base.__name__ in ASYNCPG_OUTAGES for base in type(exc).__mro__
    )


def _body(
    code: str, detail: str, status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


_PATTERN_MEANINGS: dict[str, str] = {}


def explain_pattern(pattern: str, meaning: str) -> str:
    """Register what a schema pattern means, so a mismatch reads as a sentence rather
    than as the regular expression; returns the pattern for use in a Field."""
    _PATTERN_MEANINGS[pattern] = meaning
    return pattern


def _message(error: Any) -> str:
    pattern = (error.get("ctx") or {}).get("pattern")
    if error.get("type") == "string_pattern_mismatch" and pattern in _PATTERN_MEANINGS:
        return _PATTERN_MEANINGS[pattern]
    return str(error.get("msg", "is invalid")).removeprefix("Value error, ")


# The tags of the request bodies that are tagged unions (core.spec.AnyJobCreate).
BODY_TAGS = frozenset({"distill", "inference"})


def _validation_sentence(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        # The body's own name and a tagged union's tag (a job's kind) are not fields.
        loc = [str(p) for p in error.get("loc", ())]
        if loc[:1] == ["body"]:
            loc = loc[2:] if loc[1:2] and loc[1] in BODY_TAGS else loc[1:]
        where = ".".join(loc)
        message = _message(error)
        parts.append(f"{where}: {message}" if where else message)
    return "The request is invalid: " + "; ".join(parts) + "."


def _path_miss(exc: RequestValidationError) -> str | None:
    """A path id that is not well formed names nothing: the sentence of a 404, or None."""
    for error in exc.errors():
        loc = error.get("loc", ())
        if len(loc) == 2 and loc[0] == "path" and str(loc[1]).endswith("_id"):
            kind = str(loc[1]).removesuffix("_id")
            return (
                f"No {kind} with id '{shown(str(error.get('input', '')))}' exists for this API key."
            )
    return None


def _allowed_methods(request: Request, exc: StarletteHTTPException) -> str:
    """Every method served at this path, for a 405's Allow header. The router names only
    the first route that matched the path; the OpenAPI document knows them all."""
    methods = {m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()}
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), request.url.path):
            methods |= {m.upper() for m in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def failure(request: Request, exc: Exception) -> JSONResponse:
    """An error no domain rule explains: 503 when the database is unreachable, else 500."""
    if is_outage(exc):
        log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
        return _body("unavailable", UNAVAILABLE_SENTENCE, 503)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _body("internal_error", "Stillhouse hit an internal error; it has been logged.", 500)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StillhouseError)
    async def _domain(_: Request, exc: StillhouseError) -> JSONResponse:
        return _body(exc.code, exc.detail, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        missing = _path_miss(exc)
        if missing is not None:
            return _body("not_found", missing, 404)
        return _body("invalid_request", _validation_sentence(exc), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, exc)
        return _body(code, str(exc.detail), exc.status_code, headers)

    # The driver's and the socket's errors are handled inside the app (answered, not
    # re-raised); anything else reaches the catch-all, which still tells an outage apart.
    for kind in (DBAPIError, OSError, Exception):
        app.add_exception_handler(kind, failure)
