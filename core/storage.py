"""Content-addressed artifact store behind fsspec: a local directory by
default, a shared volume or any fsspec URL (s3://bucket/prefix) in production."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

import fsspec

CHUNK = 1024 * 1024


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"limit {limit} bytes")
        self.limit = limit


class ArtifactStore:
    def __init__(self, url: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = "file" in _protocols(self.fs)
        if self.is_local:
            self.fs.makedirs(self.root, exist_ok=True)
        self._cache_dir = Path(cache_dir or tempfile.gettempdir()) / "stillhouse-cache"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put_stream(self, source: IO[bytes], max_bytes: int | None = None) -> tuple[str, str, int]:
        """Copy a stream in, hashing as it goes; return (key, sha256, size)."""
        tmp_key = f"tmp/{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        tmp_path = self._path(tmp_key)
        self.fs.makedirs(self._path("tmp"), exist_ok=True)
        try:
            with self.fs.open(tmp_path, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise UploadTooLarge(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            self.fs.rm(tmp_path)
            raise
        sha = digest.hexdigest()
        key = blob_key(sha)
        if self.fs.exists(self._path(key)):
            self.fs.rm(tmp_path)
        else:
            self.fs.makedirs(self._path(key.rsplit("/", 1)[0]), exist_ok=True)
            self.fs.mv(tmp_path, self._path(key))
        return key, sha, size

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, str, int]:
        with open(path, "rb") as source:
            return self.put_stream(source)

    def put_named(self, key: str, path: str | os.PathLike[str]) -> None:
        """Store a file under a caller-chosen key (caches keyed by their inputs).
        Written aside and moved into place, so a reader never sees half a file."""
        tmp_path = self._path(f"tmp/{uuid.uuid4().hex}")
        self.fs.makedirs(self._path("tmp"), exist_ok=True)
        self.fs.put_file(str(path), tmp_path)
        self.fs.makedirs(self._path(key.rsplit("/", 1)[0]), exist_ok=True)
        self.fs.mv(tmp_path, self._path(key))

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def open(self, key: str, mode: str = "rb") -> Any:
        return self.fs.open(self._path(key), mode)

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def local_path(self, key: str) -> Path:
        """A path on this host's disk: the file itself when local, else a cached download."""
        if self.is_local:
            return Path(self._path(key))
        target = self._cache_dir / key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{uuid.uuid4().hex}.part")
            with self.fs.open(self._path(key), "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            os.replace(partial, target)
        return target

    def delete(self, key: str) -> None:
        if self.fs.exists(self._path(key)):
            self.fs.rm(self._path(key))


def blob_key(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
