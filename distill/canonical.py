"""Every upload format converted to the canonical arrays every stage reads.

x.npy: (N, ...) float32, or int64 when the source's x is integer-typed (token
ids); y.npy: (N,) int64 class ids, absent for an unlabeled set. Formats:
npz (validated by distill.npz_scan, then copied in chunks), csv and parquet
(distill.tables), image-zip (distill.image_zip). Conversion writes into a
folder the caller owns and deletes; nothing reaches the artifact store unless
the whole file converted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.errors import DistillError
from distill.npy_io import Converted, NpyWriter
from distill.npz_scan import _chunks, _header, _members, _open, inspect_npz

if TYPE_CHECKING:
    from distill.image_zip import ZipLimits

FORMATS = ("npz", "csv", "parquet", "image-zip")


def canonical_dtype(dtype: np.dtype) -> np.dtype:
    """Integer x is token ids (int64); anything else numeric trains as float32."""
    return np.dtype(np.int64) if dtype.kind in "iu" else np.dtype(np.float32)


def _convert_npz(
    path: str | os.PathLike[str], out: Path, max_bytes: int, max_classes: int
) -> Converted:
    info = inspect_npz(path, max_bytes, max_classes)
    x_path, y_path = out / "x.npy", (out / "y.npy" if info.labeled else None)
    with _open(path) as archive:
        members = _members(archive)
        for name, target in (("x", x_path), ("y", y_path)):
            if target is None:
                continue
            head = _header(archive, members[name], name)
            dtype = canonical_dtype(head.dtype) if name == "x" else np.dtype(np.int64)
            row_shape = head.shape[1:]
            if head.fortran_order:  # chunks would cut across samples: read it whole (rare)
                with np.load(path, allow_pickle=False) as npz:
                    whole = npz[name]
                with NpyWriter(target, dtype, row_shape) as writer:
                    writer.append(whole)
                continue
            row = max(1, int(np.prod(row_shape, dtype=np.int64)))
            with NpyWriter(target, dtype, row_shape) as writer:
                for chunk in _chunks(archive, head, row):
                    writer.append(chunk.reshape(-1, *row_shape))
    return Converted(
        num_samples=info.num_samples,
        sample_shape=info.sample_shape,
        num_classes=info.num_classes,
        x_path=x_path,
        y_path=y_path,
        x_dtype=canonical_dtype(np.dtype(info.x_dtype)).name,
        source_dtype=info.x_dtype,
    )


def convert(
    fmt: str,
    path: str | os.PathLike[str],
    options: dict[str, Any],
    out: Path,
    max_bytes: int,
    max_classes: int,
    zip_limits: ZipLimits,
) -> Converted:
    """Convert one upload into `out`/x.npy and `out`/y.npy; a DistillError names what is wrong.
    pyarrow and Pillow are imported only for their formats (the npz path stays light)."""
    if fmt == "npz":
        return _convert_npz(path, out, max_bytes, max_classes)
    if fmt in ("csv", "parquet"):
        from distill.tables import convert_csv, convert_parquet
    if fmt == "csv":
        return convert_csv(path, options.get("label_column"), out, max_bytes, max_classes)
    if fmt == "parquet":
        return convert_parquet(path, options.get("label_column"), out, max_bytes, max_classes)
    if fmt == "image-zip":
        from distill.image_zip import convert_image_zip

        size = options.get("image_size") or []
        if len(size) != 2:
            raise DistillError(
                "An image-zip dataset needs an image_size; upload it again with one."
            )
        return convert_image_zip(
            path, (int(size[0]), int(size[1])), options.get("channels"), out, zip_limits
        )
    raise DistillError(f"Unknown dataset format '{fmt}'; valid formats are: {', '.join(FORMATS)}.")
