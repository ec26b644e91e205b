"""The status path: a poll answered from the job's record in Redis (one HMGET, no SQL,
no pydantic: the stored bytes are sent as they are), or, when the record is missing,
from one query whose result is published for the next poll. Conditional GETs
(`If-None-Match`) are answered 304 with no body."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from core.status import etag_of, records_of, status_query
from service.state import AppState

JSON = "application/json"


async def read_status(state: AppState, tenant_id: str, job_id: str) -> tuple[str, bytes] | None:
    """(etag, body) of the tenant's job's status, or None when the tenant has no such job."""
    cache = state.status
    if cache is not None:
        hit = await cache.get(job_id)
        if hit is not None:
            tenant, etag, body = hit
            # A job never changes tenant: another tenant's record is a 404, like its row.
            return (etag, body) if tenant == tenant_id else None
    # AUTOCOMMIT: one statement, without a BEGIN and a ROLLBACK around it.
    async with state.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = (await conn.execute(status_query([job_id], tenant_id))).all()
    record = records_of(rows).get(job_id)
    if record is None:
        return None
    if cache is not None:
        await cache.write(record)
    return record.etag, record.body


def matches(request: Request, etag: str) -> bool:
    """Whether the request's If-None-Match names this representation (or is `*`)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in tags or "*" in tags


def conditional(request: Request, body: bytes, etag: str | None = None) -> Response:
    """The JSON body with its ETag, or a bodiless 304 when the client has it already."""
    etag = etag or etag_of(body)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=JSON, headers=headers)
