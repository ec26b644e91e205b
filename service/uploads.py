"""Uploads: a body-size cap enforced while the request streams in, then a
hashed copy into the content-addressed artifact store."""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread
from fastapi import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.storage import ArtifactStore, UploadTooLarge
from service.errors import PayloadTooLarge, Unprocessable
from service.state import UnitOfWork

# Room for the multipart envelope and the small form fields around the file.
MULTIPART_OVERHEAD = 1024 * 1024
UPLOAD_PATHS = ("/v1/models", "/v1/datasets")


def too_large_sentence(limit: int) -> str:
    return (
        f"The upload is larger than this server's limit of {limit} bytes; "
        "ask the operator to raise STILLHOUSE_MAX_UPLOAD_BYTES or upload a smaller file."
    )


class _BodyTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """Refuse an oversized upload from its Content-Length, or once the streamed
    body passes the cap, before the multipart parser spools it all to disk."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.limit = max_bytes + MULTIPART_OVERHEAD
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in UPLOAD_PATHS
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        import json

        body = json.dumps(
            {"error": "payload_too_large", "detail": too_large_sentence(self.max_bytes)}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class StoredFile:
    key: str
    sha256: str
    size_bytes: int
    filename: str


async def store_upload(
    file: UploadFile, store: ArtifactStore, max_bytes: int, uow: UnitOfWork
) -> StoredFile:
    """Store the file, and tell the request's unit of work, which removes the blob
    again if the request ends without a commit."""
    try:
        blob = await anyio.to_thread.run_sync(lambda: store.put_blob(file.file, max_bytes))
    except UploadTooLarge as exc:
        raise PayloadTooLarge(too_large_sentence(max_bytes)) from exc
    uow.stored(blob)
    if blob.size == 0:
        raise Unprocessable("The uploaded file is empty; choose the file again and re-send it.")
    return StoredFile(
        key=blob.key, sha256=blob.sha256, size_bytes=blob.size, filename=file.filename or ""
    )
