"""Uploads: a body-size cap enforced while the request streams in, then a
hashed copy into the content-addressed artifact store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import anyio.to_thread
from fastapi import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.spec import CONTROL_CHARACTERS
from core.storage import ArtifactStore, UploadTooLarge
from service.errors import PayloadTooLarge, Unprocessable, shown
from service.state import UnitOfWork

# Room for the multipart envelope and the small form fields around the file.
MULTIPART_OVERHEAD = 1024 * 1024
UPLOAD_PATHS = ("/v1/models", "/v1/datasets")
# The longest file name accepted; a name derived from it is cut to the name column.
MAX_FILENAME = 255
MAX_NAME = 200


def too_large_sentence(limit: int) -> str:
    return (
        f"The upload is larger than this server's limit of {limit} bytes; "
        "ask the operator to raise STILLHOUSE_MAX_UPLOAD_BYTES or upload a smaller file."
    )


def body_too_large_sentence(limit: int) -> str:
    return (
        f"The request body is larger than this server's limit of {limit} bytes for requests "
        "other than uploads; send a smaller body, or ask the operator to raise "
        "STILLHOUSE_MAX_JSON_BYTES."
    )


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse an oversized body from its Content-Length, or once a streamed (chunked)
    body passes the cap, before anything parses or spools it. Uploads get the upload cap,
    every other request the much smaller JSON cap.

    A parser that meets the cap mid-stream may turn it into an error of its own
    (FastAPI answers "There was an error parsing the body" with 400): once the cap is
    passed, whatever the app answers is replaced by the 413."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int, max_json_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS:
            limit = self.max_upload_bytes + MULTIPART_OVERHEAD
            sentence = too_large_sentence(self.max_upload_bytes)
        else:
            limit, sentence = self.max_json_bytes, body_too_large_sentence(self.max_json_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, sentence)
            return
        seen = 0
        exceeded = responded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                exceeded = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if exceeded:
                if not responded:
                    responded = True
                    await _refuse(send, sentence)
                return  # the app's own answer to the cut-off body is dropped
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded and not responded:
            await _refuse(send, sentence)


async def _refuse(send: Send, sentence: str) -> None:
    body = json.dumps({"error": "payload_too_large", "detail": sentence}).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def checked_filename(file: UploadFile) -> str:
    """The upload's file name, refused before anything is stored when no database column
    or reader could take it: control characters (PostgreSQL refuses NUL) or over 255."""
    filename = file.filename or ""
    if re.search(CONTROL_CHARACTERS, filename):
        raise Unprocessable(
            f"The file name '{shown(filename)}' contains control characters; "
            "rename the file and upload it again."
        )
    if len(filename) > MAX_FILENAME:
        raise Unprocessable(
            f"The file name is {len(filename)} characters long; the limit is {MAX_FILENAME}. "
            "Rename the file and upload it again."
        )
    return filename


def name_from(filename: str, fallback: str) -> str:
    """A resource's default name: the file name without its suffix, cut to the column."""
    return (filename.rsplit(".", 1)[0] or fallback)[:MAX_NAME]


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
