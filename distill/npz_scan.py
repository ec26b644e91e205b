"""Inspect a .npz data set without loading it.

Each array's .npy header is read from its zip member (shape and dtype, no
data), so a file that would not fit in memory once decoded and converted for
training is refused before a byte of it is decompressed: a 4.7 MB archive of
1 GiB of zeros costs a header read, not 6 GB. The values that need checking
(finite inputs, integer labels in range) are then read in chunks of about
`CHUNK_BYTES`, so memory stays flat whatever the file holds.

Nothing is unpickled: an object dtype is refused from the header.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

import numpy as np

from distill.errors import DistillError

CHUNK_BYTES = 16 * 1024 * 1024
# Labels are class indices: a label is a row of the student's output layer, so a million
# classes is already a very large head; a larger label is a mistake, not a class.
MAX_CLASSES = 1_000_000
# What training converts each array to (distill.data.load_npz).
TRAINING_ITEMSIZE = {"x": 4, "y": 8}  # float32, int64
SAVE_HINT = "save the arrays with numpy.savez(path, x=..., y=...)"


@dataclass(frozen=True)
class DatasetInfo:
    num_samples: int
    sample_shape: tuple[int, ...]
    num_classes: int | None  # max label + 1 when labeled
    labeled: bool
    x_dtype: str  # dtype as stored in the file, before conversion to float32


@dataclass(frozen=True)
class Header:
    """One array as its .npy header describes it."""

    name: str
    member: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int  # bytes of the member before the data

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize

    @property
    def training_nbytes(self) -> int:
        return self.count * TRAINING_ITEMSIZE[self.name]


def inspect_npz(
    path: str | os.PathLike[str], max_bytes: int | None = None, max_classes: int = MAX_CLASSES
) -> DatasetInfo:
    """Validate a data set file and describe it, in bounded memory. `max_bytes` caps
    what the arrays take once decoded, and once converted for training."""
    archive = _open(path)
    with archive:
        members = _members(archive)
        if "x" not in members:
            found = ", ".join(sorted(members)) or "none"
            raise DistillError(
                f'The .npz file has no array named "x" (found: {found}); save the inputs '
                'under the key "x", e.g. numpy.savez(path, x=inputs, y=labels).'
            )
        x = _header(archive, members["x"], "x")
        y = _header(archive, members["y"], "y") if "y" in members else None
        _check_shapes(x, y)
        if max_bytes is not None:
            _check_budget(x, y, max_bytes)
        _scan_x(archive, x)
        num_classes = _scan_y(archive, y, max_classes) if y is not None else None
    return DatasetInfo(
        num_samples=x.shape[0],
        sample_shape=x.shape[1:],
        num_classes=num_classes,
        labeled=y is not None,
        x_dtype=str(x.dtype),
    )


def _open(path: str | os.PathLike[str]) -> zipfile.ZipFile:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if magic == b"\x93NUMPY":
            raise DistillError(
                f"The file is a single .npy array, not an .npz archive; {SAVE_HINT}."
            )
        return zipfile.ZipFile(path)
    except FileNotFoundError as exc:
        raise DistillError("The data file does not exist in the artifact store.") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, DistillError):
            raise
        raise DistillError(f"The file is not a readable .npz archive; {SAVE_HINT}.") from exc


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name -> zip member ("x.npy" holds "x", as numpy.savez writes it)."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in PurePosixPath(name).parts:
            raise DistillError(f"The archive holds a member with an unsafe path ('{name}').")
        members[name.removesuffix(".npy")] = info
    return members


def _header(archive: zipfile.ZipFile, member: zipfile.ZipInfo, name: str) -> Header:
    try:
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise DistillError(
                    f'The array "{name}" uses .npy format version {version}, which Stillhouse '
                    f"does not read; {SAVE_HINT} with a current numpy."
                )
            offset = stream.tell()
    except DistillError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise DistillError(
            f'The array "{name}" in the .npz archive is damaged or not a .npy array ({exc}); '
            f"{SAVE_HINT}."
        ) from exc
    header = Header(name, member, tuple(int(d) for d in shape), dtype, bool(fortran), offset)
    if dtype.hasobject:
        raise DistillError(
            f'The array "{name}" holds Python objects (object dtype), which are not loaded for '
            "safety; save plain numeric arrays instead."
        )
    if member.file_size < offset + header.nbytes:
        raise DistillError(
            f'The array "{name}" is truncated: its header declares {header.nbytes} bytes of data '
            f"but the archive holds {max(0, member.file_size - offset)}; {SAVE_HINT}."
        )
    return header


def _check_shapes(x: Header, y: Header | None) -> None:
    if x.dtype.kind not in "biuf":
        raise DistillError(
            f'The array "x" has dtype {x.dtype}, which is not numeric; store the inputs as '
            "float32 (or another integer/float dtype)."
        )
    if len(x.shape) < 2 or x.shape[0] == 0:
        raise DistillError(
            f'The array "x" has shape {x.shape}; it must be (N, ...) with N > 0 samples and at '
            "least one feature per sample."
        )
    if 0 in x.shape[1:]:
        raise DistillError(
            f'The array "x" has shape {x.shape}: its samples hold no values (a dimension of '
            "size 0); every sample needs at least one feature."
        )
    if y is None:
        return
    if len(y.shape) != 1 or y.shape[0] != x.shape[0]:
        raise DistillError(
            f'The array "y" has shape {y.shape} but "x" has {x.shape[0]} samples; "y" must be a '
            "1-D array with one class label per sample."
        )
    if y.dtype.kind not in "biuf":
        raise DistillError(
            f'The array "y" has dtype {y.dtype}; store class indices 0..C-1 as integers.'
        )


def _check_budget(x: Header, y: Header | None, max_bytes: int) -> None:
    arrays = [x] if y is None else [x, y]
    decoded = sum(a.nbytes for a in arrays)
    converted = sum(a.training_nbytes for a in arrays)
    if max(decoded, converted) > max_bytes:
        raise DistillError(
            f"The dataset's arrays take {decoded} bytes ({_human(decoded)}) once decompressed "
            f"and {converted} bytes ({_human(converted)}) once converted for training (x as "
            f"float32{', y as int64' if y is not None else ''}), more than this server accepts "
            f"({max_bytes} bytes, {_human(max_bytes)}); upload fewer or smaller samples, or ask "
            "the operator to raise the limit."
        )


def _scan_x(archive: zipfile.ZipFile, x: Header) -> None:
    """Integers are always finite; floats are checked as float32, as training sees them
    (a float64 beyond float32's range becomes infinite there)."""
    if x.dtype.kind != "f":
        return
    row = x.count // x.shape[0]
    bad_values = bad_samples = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for chunk in _chunks(archive, x, row):
            bad = ~np.isfinite(chunk.astype(np.float32))
            if not bad.any():
                continue
            bad_values += int(bad.sum())
            if not x.fortran_order:  # C order: a chunk holds whole samples
                bad_samples += int(bad.reshape(-1, row).any(axis=1).sum())
    if bad_values:
        where = f"{bad_samples} sample(s)" if not x.fortran_order else f"{bad_values} value(s)"
        raise DistillError(
            f'The array "x" contains NaN or infinite values in {where}; clean or drop '
            "those samples before uploading."
        )


def _scan_y(archive: zipfile.ZipFile, y: Header, max_classes: int) -> int:
    """Labels must be whole numbers in 0..max_classes-1; returns the class count."""
    low, high = math.inf, -math.inf
    for chunk in _chunks(archive, y, 1):
        if y.dtype.kind == "f" and not (
            np.isfinite(chunk).all() and (chunk == np.round(chunk)).all()
        ):
            raise DistillError(
                'The array "y" holds non-integer values; store class indices 0..C-1 as integers.'
            )
        low, high = min(low, chunk.min().item()), max(high, chunk.max().item())
    if low < 0:
        raise DistillError(
            f'The array "y" holds negative labels (min {int(low)}); class labels must be '
            "0..C-1 integers."
        )
    if high >= max_classes:
        raise DistillError(
            f'The array "y" holds the label {int(high)}, but this server accepts at most '
            f"{max_classes} classes (labels 0..{max_classes - 1}); store class indices 0..C-1."
        )
    return int(high) + 1


def _chunks(archive: zipfile.ZipFile, array: Header, row: int) -> Iterator[np.ndarray]:
    """The array's values as flat chunks of about CHUNK_BYTES, each a whole number of
    `row` values (in C order: whole samples)."""
    itemsize = array.dtype.itemsize
    per = max(row, CHUNK_BYTES // itemsize // row * row)
    left = array.count
    with archive.open(array.member) as stream:
        _read_exactly(stream, array.data_offset, array.name)
        while left:
            n = min(per, left)
            data = _read_exactly(stream, n * itemsize, array.name)
            yield np.frombuffer(data, dtype=array.dtype)
            left -= n


def _read_exactly(stream: IO[bytes], size: int, name: str) -> bytes:
    try:
        data = stream.read(size)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DistillError(
            f'The array "{name}" in the .npz archive is damaged ({exc}); {SAVE_HINT}.'
        ) from exc
    if len(data) != size:
        raise DistillError(f'The array "{name}" in the .npz archive is truncated; {SAVE_HINT}.')
    return data


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    raise AssertionError("unreachable")
