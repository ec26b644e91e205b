"""Image-folder .zip data sets: one folder per class, decoded with Pillow.

The archive is never extracted to disk: each member is read into memory, one
at a time, decoded, resized to the upload's image size and appended to x.npy
as (C, H, W) float32 in [0, 1]. Class ids are the folder names in sorted order.

Safe reading: absolute paths, `..` components and symbolic links are refused;
the entry count and the total expanded size are capped, the latter both from
the sizes the archive declares and while decompressing, so a header that lies
about a member's size cannot make a bomb of it.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from distill.errors import DistillError
from distill.npy_io import Converted, NpyWriter

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}
# One image may not decode to more pixels than this (Pillow's bomb guard, made an error).
MAX_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int
    max_expanded_bytes: int
    max_decoded_bytes: int  # x once decoded, float32


def _checked_members(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > limits.max_entries:
        raise DistillError(
            f"The zip has {len(members)} entries, more than this server's limit of "
            f"{limits.max_entries}; upload fewer images, or ask the operator to raise "
            "STILLHOUSE_MAX_ZIP_ENTRIES."
        )
    declared = 0
    for info in members:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
            raise DistillError(
                f"The zip entry '{name[:200]}' points outside the archive (an absolute path or "
                "'..'); zip the class folders themselves and upload again."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DistillError(
                f"The zip entry '{name[:200]}' is a symbolic link; zip the image files "
                "themselves, not links to them."
            )
        declared += info.file_size
    if declared > limits.max_expanded_bytes:
        raise DistillError(
            f"The zip expands to {declared} bytes, more than this server's limit of "
            f"{limits.max_expanded_bytes}; upload fewer or smaller images, or ask the operator "
            "to raise STILLHOUSE_MAX_ZIP_EXPANDED_BYTES."
        )
    return members


def _images(members: list[zipfile.ZipInfo]) -> list[tuple[zipfile.ZipInfo, str]]:
    """(member, class folder) for every image file, sorted by path; hidden files and
    macOS resource folders are skipped."""
    found = []
    for info in members:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in path.parts):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if len(path.parts) < 2:
            raise DistillError(
                f"The image '{info.filename[:200]}' is not inside a class folder; put each "
                "class's images in a folder named after the class, e.g. cat/1.png, dog/2.png."
            )
        found.append((info, path.parts[-2]))
    if not found:
        raise DistillError(
            "The zip holds no images (.png, .jpg, .bmp, .gif, .tiff, .webp) in class folders; "
            "put each class's images in a folder named after the class."
        )
    return sorted(found, key=lambda item: item[0].filename)


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The member's bytes, refused once more than `budget` come out of the decompressor
    (whatever its header declared)."""
    try:
        with archive.open(info) as stream:
            data = stream.read(budget + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise DistillError(
            f"The zip entry '{info.filename[:200]}' is damaged or does not match its header "
            f"({exc}); zip the class folders again and re-upload."
        ) from exc
    if len(data) > budget:
        raise DistillError(
            "The zip expands to more than this server's limit on expanded size (a member holds "
            "more than its header declares); upload a well-formed zip of images."
        )
    return data


def _decode(data: bytes, name: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise DistillError(
                        f"The image '{name[:200]}' has {image.width}x{image.height} pixels, more "
                        f"than {MAX_IMAGE_PIXELS}; shrink it before uploading."
                    )
                converted = image.convert("L" if channels == 1 else "RGB")
                resized = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(resized, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    except DistillError:
        raise
    except (
        OSError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise DistillError(
            f"The image '{name[:200]}' could not be decoded ({exc}); remove or re-save it."
        ) from exc
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def convert_image_zip(
    path: str | os.PathLike[str],
    image_size: tuple[int, int],
    channels: int | None,
    out: Path,
    limits: ZipLimits,
) -> Converted:
    """Decode every image into x.npy (N, C, H, W) float32 and its folder's class id into
    y.npy (N,) int64. `channels` None: 1 when the first image is grayscale, else 3."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DistillError(
            f"The file is not a readable .zip archive ({exc}); zip the class folders again."
        ) from exc
    with archive:
        images = _images(_checked_members(archive, limits))
        classes = sorted({folder for _, folder in images})
        ids = {folder: i for i, folder in enumerate(classes)}
        budget = limits.max_expanded_bytes
        first = _read(archive, images[0][0], budget)
        if channels is None:
            with Image.open(io.BytesIO(first)) as probe:
                channels = 1 if probe.mode in GRAY_MODES else 3
        shape = (channels, *image_size)
        decoded = len(images) * 4 * int(np.prod(shape))
        if decoded > limits.max_decoded_bytes:
            raise DistillError(
                f"The {len(images)} images take {decoded} bytes once decoded at this size, more "
                f"than this server's limit of {limits.max_decoded_bytes}; upload fewer images or "
                "a smaller image_size."
            )
        x_path, y_path = out / "x.npy", out / "y.npy"
        with NpyWriter(x_path, np.float32, shape) as xs, NpyWriter(y_path, np.int64, ()) as ys:
            for i, (info, folder) in enumerate(images):
                data = first if i == 0 else _read(archive, info, budget)
                budget -= len(data)
                xs.append(_decode(data, info.filename, image_size, channels)[None])
                ys.append(np.array([ids[folder]], dtype=np.int64))
    return Converted(
        num_samples=len(images),
        sample_shape=shape,
        num_classes=len(classes),
        x_path=x_path,
        y_path=y_path,
        x_dtype="float32",
        source_dtype="image",
        classes=tuple(classes),
    )
