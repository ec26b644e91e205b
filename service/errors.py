"""One error base class carrying its status code and a sentence for the user;
one set of handlers renders every error as {"error": code, "detail": sentence}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("stillhouse.api")


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
        return cls(f"No {kind} with id '{resource_id}' exists for this API key.")


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


def _body(code: str, detail: str, status: int) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _validation_sentence(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "The request is invalid: " + "; ".join(parts) + "."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StillhouseError)
    async def _domain(_: Request, exc: StillhouseError) -> JSONResponse:
        return _body(exc.code, exc.detail, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _body("invalid_request", _validation_sentence(exc), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _body(code, str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _body("internal_error", "Stillhouse hit an internal error; it has been logged.", 500)


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"
