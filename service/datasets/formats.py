"""Which dataset formats an upload may be, and the form fields each one takes.

The gateway only reads the file name and the fields (it never opens the file:
the worker converts it, see distill.canonical). A field that does not apply
to the file's format is refused with a sentence rather than ignored.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from service.errors import Unprocessable, UnsupportedMediaType, shown

# File suffix -> Dataset.format.
SUFFIXES = {
    ".npz": "npz",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".zip": "image-zip",
}
# Which option each format takes.
OPTIONS = {
    "npz": (),
    "csv": ("label_column",),
    "parquet": ("label_column",),
    "image-zip": ("image_size", "channels"),
}
MAX_IMAGE_SIDE = 1024
SIZE = re.compile(r"^\s*(\d{1,5})\s*(?:[x×,]\s*(\d{1,5}))?\s*$")


def unreadable(filename: str) -> str:
    """The 415's sentence for a file whose name says no dataset format."""
    return (
        f"Stillhouse cannot read '{shown(filename) or 'the file'}' as a dataset; upload an "
        ".npz (arrays 'x' and optionally 'y'), a .csv or .parquet table (name the label "
        "column in 'label_column'), or a .zip of images with one folder per class (give "
        "'image_size')."
    )


def format_of(filename: str) -> str:
    fmt = SUFFIXES.get(PurePosixPath(filename.lower()).suffix)
    if fmt is None:
        raise UnsupportedMediaType(unreadable(filename))
    return fmt


def image_size(text: str) -> list[int]:
    """'28' or '28x28' (H x W) -> [H, W]."""
    match = SIZE.match(text)
    if match is None:
        raise Unprocessable(
            f"image_size '{shown(text)}' is not a size; give one number (a square, e.g. 28) "
            "or HEIGHTxWIDTH (e.g. 28x32)."
        )
    h = int(match.group(1))
    w = int(match.group(2) or h)
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise Unprocessable(
            f"image_size {h}x{w} is out of range; each side must be 1..{MAX_IMAGE_SIDE} pixels."
        )
    return [h, w]


def upload_options(
    fmt: str, label_column: str | None, size: str | None, channels: int | None
) -> dict[str, Any] | None:
    """The options Dataset.options records for this upload (None: none given)."""
    given = {
        "label_column": label_column,
        "image_size": size,
        "channels": channels,
    }
    for field, value in given.items():
        if value is not None and field not in OPTIONS[fmt]:
            takes = ", ".join(OPTIONS[fmt]) or "no options"
            raise Unprocessable(
                f"The form field '{field}' does not apply to a {fmt} dataset (it takes "
                f"{takes}); leave it out."
            )
    options: dict[str, Any] = {}
    if label_column is not None:
        if not label_column.strip():
            raise Unprocessable(
                "label_column is empty; give the label column's name or leave it out."
            )
        options["label_column"] = label_column
    if fmt == "image-zip":
        if size is None:
            raise Unprocessable(
                "An image-folder .zip needs 'image_size' (e.g. 28 or 28x28): every image is "
                "resized to it."
            )
        options["image_size"] = image_size(size)
        if channels is not None:
            if channels not in (1, 3):
                raise Unprocessable(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
            options["channels"] = channels
    return options or None
