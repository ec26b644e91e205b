"""Data sets as .npz files: key "x" (N, ...) numeric, optional key "y" (N,) class labels.

`load_npz` loads a file that inspection (distill.npz_scan, in bounded memory)
has already accepted; it checks again, since a file can be read by a script
too."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from distill.errors import DistillError
from distill.npz_scan import DatasetInfo, inspect_npz

__all__ = ["DatasetInfo", "inspect_npz", "load_npz"]


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DistillError(f"The data file {os.fspath(path)!r} does not exist.") from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # allow_pickle=False makes numpy refuse any file it would have to unpickle.
        raise DistillError(
            "The file is not a readable .npz archive; save the arrays with "
            "numpy.savez(path, x=..., y=...)."
        ) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DistillError(
            f"The file {os.fspath(path)!r} is a single .npy array, not an .npz archive; "
            "save it with numpy.savez(path, x=..., y=...)."
        )
    try:
        with loaded as npz:
            if "x" not in npz.files:
                found = ", ".join(npz.files) or "none"
                raise DistillError(
                    f'The .npz file has no array named "x" (found: {found}); save the inputs '
                    'under the key "x", e.g. numpy.savez(path, x=inputs, y=labels).'
                )
            return {k: npz[k] for k in ("x", "y") if k in npz.files}
    except ValueError as exc:
        if isinstance(exc, DistillError):
            raise
        if "object arrays" in str(exc).lower():
            raise DistillError(
                "The .npz file holds Python objects (object dtype), which are not loaded for "
                "safety; save plain numeric arrays instead."
            ) from exc
        raise DistillError(
            f"The .npz archive is damaged ({exc}); save it again with numpy.savez."
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DistillError(
            f"The .npz archive is damaged ({exc}); save it again with numpy.savez."
        ) from exc


def _check_x(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DistillError(
            f'The array "x" has dtype {x.dtype}, which is not numeric; store the inputs as '
            "float32 (or another integer/float dtype)."
        )
    if x.ndim < 2 or x.shape[0] == 0 or 0 in x.shape[1:]:
        raise DistillError(
            f'The array "x" has shape {x.shape}; it must be (N, ...) with N > 0 samples and at '
            "least one feature per sample."
        )
    if x.dtype.kind in "biu":  # integers (token ids, pixel values) stay exact, as int64
        return x.astype(np.int64, copy=False)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DistillError(
            f'The array "x" contains NaN or infinite values in {bad} sample(s); clean or drop '
            "those samples before uploading."
        )
    return x


def _check_y(y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise DistillError(
            f'The array "y" has shape {y.shape} but "x" has {n} samples; "y" must be a 1-D '
            "array with one class label per sample."
        )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise DistillError(
                'The array "y" holds non-integer values; store class indices 0..C-1 as integers.'
            )
    elif y.dtype.kind not in "biu":
        raise DistillError(
            f'The array "y" has dtype {y.dtype}; store class indices 0..C-1 as integers.'
        )
    y = y.astype(np.int64)
    if (y < 0).any():
        raise DistillError(
            f'The array "y" holds negative labels (min {int(y.min())}); class labels must be '
            "0..C-1 integers."
        )
    return y


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Load and validate a data set: returns x (N, ...) float32 and y (N,) int64 or None."""
    arrays = _read_npz(path)
    x = _check_x(arrays["x"])
    y = _check_y(arrays["y"], len(x)) if "y" in arrays else None
    return x, y
