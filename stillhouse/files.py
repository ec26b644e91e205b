"""Files through the client: a reader that counts the bytes an upload has sent, and
the name a download's Content-Disposition header gives."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class CountingReader:
    """A binary file that reports how many bytes have been read from it: httpx reads the
    upload through it in chunks, so the callback sees the bytes as they are sent."""

    def __init__(self, raw: BinaryIO, total: int | None, progress: Progress | None) -> None:
        self.raw, self.total, self.progress, self.sent = raw, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.sent += len(chunk)
        if self.progress is not None:
            self.progress(self.sent, self.total)
        return chunk

    # httpx sizes the body (Content-Length) from these and rewinds the file before sending.
    def fileno(self) -> int:
        return self.raw.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.sent = self.raw.seek(offset, whence)
        return self.sent

    def tell(self) -> int:
        return self.raw.tell()


def filename_of(disposition: str) -> str:
    """The file name of a Content-Disposition header (RFC 6266 filename* first); only
    its last path part, so a name can never point outside the chosen folder."""
    encoded = re.search(r"filename\*=utf-8''([^;]+)", disposition, re.IGNORECASE)
    plain = re.search(r'filename="([^"]*)"', disposition)
    name = unquote(encoded.group(1)) if encoded else plain.group(1) if plain else ""
    return Path(name.replace("\\", "/")).name or "download"
