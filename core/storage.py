"""Content-addressed artifact store behind fsspec: a local directory by
default, a shared volume or any fsspec URL (s3://bucket/prefix) in production."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Blob:
    """A stream stored under its content's key. `created_stamp` is the blob's modification
    time (ns) when this call created it, None when the blob was there already."""

    key: str
    sha256: str
    size: int
    created_stamp: int | None


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    stamp: int  # modification time, ns since the epoch


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
        blob = self.put_blob(source, max_bytes)
        return blob.key, blob.sha256, blob.size

    def put_blob(self, source: IO[bytes], max_bytes: int | None = None) -> Blob:
        """Copy a stream in under its content's key. When the blob is there already, its
        modification time is refreshed instead: the garbage collector spares blobs younger
        than its grace period, so one an upload is about to record is never collected."""
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
            sha = digest.hexdigest()
            key = blob_key(sha)
            self.fs.makedirs(self._path(key.rsplit("/", 1)[0]), exist_ok=True)
            created = self._settle(tmp_path, self._path(key))
        finally:
            if self.fs.exists(tmp_path):
                self.fs.rm(tmp_path)
        return Blob(key=key, sha256=sha, size=size, created_stamp=created)

    def _settle(self, tmp_path: str, path: str) -> int | None:
        """Put the written file at `path`, or refresh the blob already there; returns the
        new blob's modification time (ns) when this call created it, else None."""
        if not self.is_local:
            # Object stores cannot refresh a time in place: write it again (same bytes).
            existed = bool(self.fs.exists(path))
            self.fs.mv(tmp_path, path)
            return None if existed else self.stamp_of(path)
        for _ in range(3):
            try:
                os.link(tmp_path, path)  # atomic: of two uploads of new content, one creates
                return os.stat(path).st_mtime_ns
            except FileExistsError:
                pass
            try:
                os.utime(path)
                return None
            except FileNotFoundError:
                continue  # collected between the two calls: create it again
        raise OSError(f"could not store blob {path}: it kept disappearing")

    def stamp_of(self, path: str) -> int:
        if self.is_local:
            return os.stat(path).st_mtime_ns
        return int(self.fs.modified(path).timestamp() * 1e9)

    def discard(self, blob: Blob) -> bool:
        """Remove a blob this process created (a request that failed), unless another
        upload of the same content refreshed it meanwhile. True when removed."""
        if blob.created_stamp is None:
            return False
        return self.remove_if_unchanged(blob.key, blob.created_stamp)

    def remove_if_unchanged(self, key: str, stamp: int) -> bool:
        """Remove `key` if its modification time is still `stamp`. Locally the file is
        first renamed aside (atomic), so an upload that refreshes it after the check
        finds it gone and creates it again, and one that refreshed it before the rename
        shows in its time: the file is then put back."""
        path = self._path(key)
        if not self.is_local:  # best effort: object stores have no atomic rename
            if not self.fs.exists(path) or self.stamp_of(path) != stamp:
                return False
            self.fs.rm(path)
            return True
        aside = self._path(f"tmp/{uuid.uuid4().hex}.collected")
        self.fs.makedirs(self._path("tmp"), exist_ok=True)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if os.stat(aside).st_mtime_ns != stamp:
            with contextlib.suppress(FileExistsError):  # recreated meanwhile: same bytes
                os.link(aside, path)
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def blobs(self) -> Iterator[StoredBlob]:
        """Every blob under `blobs/`, with its size and modification time."""
        prefix = self._path("blobs")
        if not self.fs.exists(prefix):
            return
        if self.is_local:
            for folder, _, names in os.walk(prefix):
                for name in names:
                    path = os.path.join(folder, name)
                    try:
                        stat = os.stat(path)
                    except FileNotFoundError:
                        continue
                    key = os.path.relpath(path, self.root).replace(os.sep, "/")
                    yield StoredBlob(key, stat.st_size, stat.st_mtime_ns)
            return
        for path, info in self.fs.find(prefix, detail=True).items():
            key = path[len(self.root) :].lstrip("/")
            yield StoredBlob(key, int(info.get("size") or 0), self.stamp_of(path))

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
