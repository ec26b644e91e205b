"""Canonical arrays as .npy files, written and read in bounded memory.

`NpyWriter` appends rows to a .npy file whose row count need not be known in
advance (a CSV's is not): the header is written with room to spare and
rewritten with the final shape on close. `npy_layout` reads a file's header
(dtype, shape, where the data starts) so rows can be read with explicit reads
(`read_rows`): unlike a memory map, whose touched pages count in the process's
RSS until they are unmapped, an explicit read costs only the rows it returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

# Header bytes reserved up front, magic included: a multiple of 64 as numpy writes them.
HEADER_BYTES = 256
MAGIC = b"\x93NUMPY\x01\x00"


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    room = HEADER_BYTES - len(MAGIC) - 2 - 1  # the length field and the final newline
    if len(text) > room:
        raise ValueError(f"a .npy header for shape {shape} does not fit in {HEADER_BYTES} bytes")
    body = text.ljust(room).encode("latin1") + b"\n"
    return MAGIC + len(body).to_bytes(2, "little") + body


class NpyWriter:
    """Append (b, *row_shape) blocks to a .npy file of dtype `dtype`; close() fixes the
    header's row count. Each block is converted to `dtype` (a copy of one block only)."""

    def __init__(
        self, path: str | os.PathLike[str], dtype: np.dtype | type, row_shape: tuple[int, ...]
    ) -> None:
        self.path, self.dtype, self.row_shape = os.fspath(path), np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(_header(self.dtype, (0, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype).reshape(-1, *self.row_shape)
        self._file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(_header(self.dtype, (self.rows, *self.row_shape)))
        self._file.close()

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class NpyLayout:
    path: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # bytes before the data

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def npy_layout(path: str | os.PathLike[str]) -> NpyLayout:
    """A C-ordered .npy file's dtype, shape and data offset, from its header alone."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(f)
        if fortran or dtype.hasobject:
            raise ValueError(f"{os.fspath(path)!r} is not a C-ordered numeric .npy file")
        return NpyLayout(os.fspath(path), dtype, tuple(shape), f.tell())


def read_rows_at(layout: NpyLayout, positions: np.ndarray) -> np.ndarray:
    """The rows at `positions` (sorted), one read each: for a sparse view (a holdout), where
    one read of the span would cost many times the rows asked for."""
    out = np.empty((len(positions), *layout.shape[1:]), dtype=layout.dtype)
    flat = out.reshape(len(positions), -1).view(np.uint8)  # (k, row_bytes)
    with open(layout.path, "rb", buffering=0) as f:
        for i, position in enumerate(positions):
            f.seek(layout.offset + int(position) * layout.row_bytes)
            if f.readinto(flat[i].data) != layout.row_bytes:
                raise ValueError(f"{layout.path!r} ends before row {position} (truncated?)")
    return out


def read_rows(layout: NpyLayout, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of the file with one explicit read: (stop - start, ...)."""
    count = max(0, stop - start)
    out = np.empty((count, *layout.shape[1:]), dtype=layout.dtype)  # writable, read into
    with open(layout.path, "rb", buffering=0) as f:
        f.seek(layout.offset + start * layout.row_bytes)
        view, done = out.reshape(-1).view(np.uint8).data, 0
        while done < out.nbytes:
            got = f.readinto(view[done:])
            if not got:
                raise ValueError(f"{layout.path!r} ends before row {stop} (truncated?)")
            done += got
    return out


@dataclass(frozen=True)
class Converted:
    """What a conversion wrote: x.npy and y.npy (None: unlabeled) under the output folder."""

    num_samples: int
    sample_shape: tuple[int, ...]
    num_classes: int | None
    x_path: Path
    y_path: Path | None
    x_dtype: str  # float32 | int64
    source_dtype: str
    classes: tuple[str, ...] | None = None  # an image zip's folder names, by class id
