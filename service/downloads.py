"""Serving a stored artifact as a download, from whichever store holds it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi.responses import FileResponse, Response, StreamingResponse

from core.storage import ArtifactStore

# The OpenAPI description of a download route's 200 response.
BINARY: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    }
}


def content_disposition(filename: str) -> str:
    """`attachment` with a file name no client can misread (RFC 6266): the exact
    name percent-encoded in `filename*`, as Starlette's FileResponse writes it,
    and a plain ASCII fallback, without quotes, separators or escapes, for old clients."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;%' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=utf-8''{quote(filename, safe='')}"


def download(store: ArtifactStore, key: str, filename: str) -> Response:
    # One escaped header whichever store serves the file: a name is user text.
    headers = {"Content-Disposition": content_disposition(filename)}
    if store.is_local:
        return FileResponse(
            store.local_path(key), headers=headers, media_type="application/octet-stream"
        )

    def chunks() -> Iterator[bytes]:
        with store.open(key) as source:
            while block := source.read(1024 * 1024):
                yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)
