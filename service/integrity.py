"""A row the request refers to vanished between its checks and its insert.

The key is checked at the start of a request; its tenant may be deleted
before the request's INSERT commits. The database then refuses the insert
with a foreign-key violation, which is the caller's problem (401 or 404),
not the server's (500)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from service.errors import NotFound, StillhouseError, Unauthorized, failure

FOREIGN_KEY_SQLSTATE = "23503"  # PostgreSQL foreign_key_violation (psycopg and asyncpg)
FOREIGN_KEY_SQLITE = "SQLITE_CONSTRAINT_FOREIGNKEY"


def is_foreign_key_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    return (
        getattr(orig, "sqlstate", None) == FOREIGN_KEY_SQLSTATE
        or getattr(orig, "sqlite_errorname", None) == FOREIGN_KEY_SQLITE
        or "FOREIGN KEY constraint failed" in str(orig)  # sqlite3 through aiosqlite
    )


def _as_domain_error(exc: IntegrityError) -> StillhouseError | None:
    if not is_foreign_key_violation(exc):
        return None
    detail = str(getattr(exc.orig, "detail", None) or "")
    # SQLite does not say which key failed; every foreign key the gateway writes
    # points at the tenant, except a job's stages, written with their job.
    if not detail or 'table "tenants"' in detail:
        return Unauthorized(
            "This API key's tenant was deleted while the request ran; nothing was saved. "
            "Create a new key with 'stillhouse keys create'."
        )
    return NotFound(
        "A resource this request refers to was deleted while it ran; nothing was saved."
    )


def install_integrity_handler(app: FastAPI) -> None:
    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        error = _as_domain_error(exc)
        if error is None:
            return await failure(request, exc)  # any other constraint: logged, 500
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
        return JSONResponse(
            {"error": error.code, "detail": error.detail},
            status_code=error.status_code,
            headers=headers,
        )
